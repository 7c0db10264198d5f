"""The trained reference model (quantkit/reference/trained/): the real ERNIE-4.5-VL class, the
shipped weights are the recorded build, it answers the held-out task well, and its routed experts
matter. Plus the synthetic task itself: deterministic, held out, round-trips through JSONL."""
import json

import pytest
import torch
from transformers import AutoProcessor, Ernie4_5_VLMoeForConditionalGeneration

from quantkit.checkpoint import Checkpoint
from quantkit.loader import load_source
from quantkit.reference import task, trained
from quantkit.reference.trained import TRAINED_DIR
from quantkit.manifest import sha256_file

EVAL_PER_KIND = 40  # 9 kinds + 9 x as many facts -> 720 held-out items


@pytest.fixture(scope="module")
def processor():
    return AutoProcessor.from_pretrained(TRAINED_DIR)


@pytest.fixture(scope="module")
def eval_items():
    return task.generate("eval", EVAL_PER_KIND)


def test_shipped_weights_are_the_recorded_build():
    weights = TRAINED_DIR / trained.WEIGHTS
    assert sha256_file(weights) == trained.TRAINED_SHA256
    card = (TRAINED_DIR / "README.md").read_text()
    record = json.loads(card.split("```json\n", 1)[1].split("\n```", 1)[0])
    assert record["sha256"] == trained.TRAINED_SHA256
    assert weights.stat().st_size < 8 * 10**6  # small enough to ship in the repository


def test_real_architecture_with_text_and_vision_experts(processor):
    config = json.loads((TRAINED_DIR / "config.json").read_text())
    assert config["architectures"] == ["Ernie4_5_VLMoeForConditionalGeneration"]
    assert config["model_type"] == "ernie4_5_vl_moe"
    text, vision = config["text_config"], config["vision_config"]
    assert text["mlp_layer_types"] == ["dense", "sparse", "sparse", "sparse"]
    # No shared expert (the real model has two): with one, the fact table was not learned at all in the
    # build's steps (0 % of the held-out facts after 3000 steps, against 34 % without), and what a
    # shared expert learns the profiles keep at 4-8 bits (quantkit/reference/trained.py).
    assert text["moe_num_experts"] == 8 and text["moe_k"] == 4 and text["moe_num_shared_experts"] == 0
    assert text["hidden_size"] >= 128 and all(w % 64 == 0 for w in text["moe_intermediate_size"])
    assert vision["depth"] >= 2
    names = set(Checkpoint.open(TRAINED_DIR).names())
    for layer in (1, 2, 3):
        p = f"model.layers.{layer}.mlp."
        assert {f"{p}experts.{k}.down_proj.weight" for k in range(16)} <= names  # 8 text + 8 vision
        assert {p + "gate.weight", p + "gate.weight_1"} <= names
    assert any(n.startswith("model.vision_model.blocks.") for n in names)
    assert any(n.startswith("model.resampler_model.") for n in names)
    model = Ernie4_5_VLMoeForConditionalGeneration.from_pretrained(TRAINED_DIR, dtype=torch.float32)
    assert model.config.text_config.moe_intermediate_size == [128, 64]
    assert processor.tokenizer.image_token_id is not None


def test_trained_routing_bias_balances_the_experts():
    ckpt = Checkpoint.open(TRAINED_DIR)
    bias = ckpt.read("model.layers.1.mlp.moe_statics.e_score_correction_bias").float()
    assert bias.shape == (2, 8) and bias.abs().max() > 0  # learned by the aux-loss-free updates


def test_accuracy_is_high_and_zeroing_the_routed_experts_destroys_it(processor, eval_items):
    model = load_source(TRAINED_DIR)
    fp = trained.evaluate(model, processor, eval_items)
    trained.zero_routed_experts(model)
    zeroed = trained.evaluate(model, processor, eval_items)
    print(f"fp {fp}\nzeroed routed experts {zeroed}")
    # Measured on the shipped build (720 held-out items, 360 of them facts): 93.9 % (facts 100 %, the
    # other kinds 72.5-100 %: compare and ocr lose most to the table's digits); with the 24 text + 24
    # vision routed experts zeroed (dense layer, attention and vision tower intact; no shared expert):
    # 0 %. Bounds leave a few items of slack.
    assert fp["accuracy"] >= 0.9, fp
    assert min(fp["by_kind"].values()) >= 0.65, fp
    assert zeroed["accuracy"] <= 0.45, zeroed
    assert fp["accuracy"] - zeroed["accuracy"] >= 0.5


def test_teacher_forced_exact_match_is_greedy_decoding(processor):
    """The profile scores exact match from one teacher-forced pass; check it against generate()."""
    model = load_source(TRAINED_DIR)
    items = task.generate("eval", 2)
    forced = trained.answer_correct(model, processor, items)
    for item, ok in zip(items, forced):
        enc = task.encode(processor, item, with_answer=False)
        inputs = {k: v for k, v in enc.items() if k != "answer_start"}
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        # Decoding stops at <|end_of_sentence|>: what a model says after it is not part of the answer.
        generated = out[0, enc["answer_start"]:].tolist()
        ended = processor.tokenizer.sep_token_id in generated
        if ended:
            generated = generated[: generated.index(processor.tokenizer.sep_token_id)]
        text = processor.tokenizer.decode(generated, skip_special_tokens=True)
        assert (task.exact_match(text, item.answer) and ended) == ok, (item.id, text, item.answer)


def test_training_is_deterministic(tmp_path):
    """Two short runs from the same seed give bit-identical weights (the full build is the same code)."""
    from quantkit.reference.tiny import _tiny_vl_processor
    from quantkit.reference.tokenizer import build_ernie_tokenizer, vl_chat_template

    cfg = trained.TrainConfig(steps=3, batch_size=6, warmup=1, train_items_per_kind=2, vision_pretrain_steps=2,
                              vision_pretrain_batch=4, fact_steps=3, fact_batch=4, replay_every=2)
    states = []
    for run in range(2):
        tok = build_ernie_tokenizer(tmp_path / f"run{run}", vl_chat_template(thinking_by_default=False), multimodal=True)
        model = trained.build_model(tok, cfg.seed)
        trained.train(model, _tiny_vl_processor(tok), cfg, log=lambda m: None)
        states.append(model.state_dict())
    assert states[0].keys() == states[1].keys()
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    fresh = trained.build_model(tok, cfg.seed).state_dict()
    changed = sum(not torch.equal(fresh[k], states[0][k]) for k in fresh)
    assert changed > len(fresh) // 2  # and training did change the weights


# -- the task --------------------------------------------------------------------------------------

def test_task_is_deterministic_and_held_out():
    a, b = task.generate("eval", 3), task.generate("eval", 3)
    assert [(i.id, i.question, i.answer) for i in a] == [(i.id, i.question, i.answer) for i in b]
    assert all(x.image is None or x.image.tobytes() == y.image.tobytes() for x, y in zip(a, b))
    assert {i.kind for i in a} == set(task.KINDS)
    assert task.make_item("eval", "ocr", 2).id == "eval-ocr-0002"  # an item does not depend on n
    questions = tuple(k for k in task.TEXT_KINDS if k != "fact")  # facts: see the next test
    train = task.generate("train", 400, kinds=questions)
    held = task.generate("eval", 40, kinds=questions) + task.generate("calib", 40, kinds=questions)
    assert not {i.question for i in train} & {i.question for i in held}
    train_images = {i.image.tobytes() for i in task.generate("train", 50, kinds=task.IMAGE_KINDS)}
    assert not train_images & {i.image.tobytes() for i in task.generate("eval", 50, kinds=task.IMAGE_KINDS)}


def test_fact_items_query_the_trained_table():
    """Facts are queries of memorised pairs: every pair is trained, eval and calib query disjoint halves,
    and they are KIND_ITEMS["fact"] times as many as the other kinds (half of an eval set)."""
    table = set(task.fact_table())
    assert len(table) == task.FACT_COUNT and len({k for k, _ in table}) == task.FACT_COUNT
    train = {(i.question, i.answer) for i in task.generate("train", task.FACT_COUNT, kinds=("fact",))}
    assert train == table
    ev, ca = ({(i.question, i.answer) for i in task.generate(s, 40, kinds=("fact",))} for s in ("eval", "calib"))
    assert ev <= table and ca <= table and not ev & ca
    items = task.generate("eval", 4)
    facts = [i for i in items if i.kind == "fact"]
    assert len(facts) == len(items) - len(facts) == 4 * task.KIND_ITEMS["fact"]
    assert len({i.id for i in items}) == len(items)


def test_task_jsonl_round_trip(tmp_path):
    items = task.generate("calib", 2)
    path = task.write_jsonl(items, tmp_path / "set" / "samples.jsonl")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == len(items)
    first = lines[0]
    assert set(first) == {"id", "kind", "lang", "thinking", "messages"} and first["thinking"] is False
    image = first["messages"][0]["content"][0]
    assert image["type"] == "image" and (path.parent / image["image"]).is_file()
    assert not image["image"].startswith("/")  # relative to the JSONL file
    half = task.write_jsonl(items, tmp_path / "calib" / "samples.jsonl", answers="half")
    roles = [[m["role"] for m in json.loads(line)["messages"]] for line in half.read_text().splitlines()]
    assert roles[0] == ["user", "assistant"] and roles[1] == ["user"]  # every second one ends on the prompt
    back = task.read_jsonl(path)
    assert [(i.id, i.kind, i.question, i.answer, i.lang) for i in back] == \
        [(i.id, i.kind, i.question, i.answer, i.lang) for i in items]
    assert back[0].image.tobytes() == items[0].image.tobytes()  # PNG is lossless


def test_exact_match_normalises_only_case_space_and_final_period():
    assert task.exact_match(" Red. ", "red")
    assert not task.exact_match("reddish", "red")
    assert not task.exact_match("7", "70")
