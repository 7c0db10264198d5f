"""Time the allocator at the real ERNIE-4.5-VL-28B-A3B shapes (random weights, SPD H): per-expert RTN
error at 4 widths and the GPTQ ratio per representative; projects the full model (1 thread)."""
import time
import torch
from quantkit.adapters import adapter_for, real_config
from quantkit.allocate import rtn_error, gptq_error, DEFAULT_ROWS
from quantkit.scheme import QuantScheme
torch.set_num_threads(1)
cfg = real_config("ERNIE-4.5-VL-28B-A3B")
s = adapter_for(cfg).shape
H, I = s.hidden_size, s.expert_intermediate["text"]
print("hidden", H, "expert widths", s.expert_intermediate, "experts", s.experts, "moe layers", len(s.moe_layers))
def spd(n):
    x = torch.randn(4 * n, n)
    return x.T @ x / (4 * n)
hg = spd(H)
widths = [QuantScheme(bits=b) for b in (2, 3, 4, 8)]
t_exp, t_rep = {}, {}
for m, I in s.expert_intermediate.items():
    hd = spd(I)
    gate, up, down = torch.randn(I, H) * .02, torch.randn(I, H) * .02, torch.randn(H, I) * .02
    t = time.perf_counter()
    for s_ in widths:
        for w, h in ((gate, hg), (up, hg), (down, hd)):
            rtn_error(w, h, s_, DEFAULT_ROWS)
    t_exp[m] = time.perf_counter() - t
    t = time.perf_counter()
    for s_ in widths:
        gptq_error(torch.cat([gate, up]), hg, s_)
        gptq_error(down, hd, s_)
    t_rep[m] = time.perf_counter() - t
    print(f"{m}: one expert, 4 widths, RTN error on {DEFAULT_ROWS} rows: {t_exp[m]:.3f} s; "
          f"GPTQ ratio on one representative, 4 widths: {t_rep[m]:.2f} s (1 thread)")
L = len(s.moe_layers)
total = L * sum(s.experts[m] * t_exp[m] + t_rep[m] for m in s.experts)
print(f"projected compute for {L} MoE layers: {total/60:.1f} min on 1 thread")
