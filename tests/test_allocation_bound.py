"""bench/allocation_bound.py's search: the best width per unit within uniform 3-bit's bytes under the
additive model, checked against a case worked by hand."""
from bench.allocation_bound import best_assignment, predicted


def test_best_assignment_trades_a_cheap_unit_down_for_a_sensitive_one_up():
    widths = (2, 3, 4)
    units = ["sensitive", "robust"]
    nbytes = {(u, w): w - 3 for u in units for w in widths}  # bytes against uniform 3-bit: -1, 0, +1
    base = {"kl_answer": 10.0, "kl_all": 10.0}
    change = {("sensitive", 2): 5.0, ("sensitive", 3): 0.0, ("sensitive", 4): -3.0,
              ("robust", 2): 1.0, ("robust", 3): 0.0, ("robust", 4): -0.5}
    change = {k: {"kl_answer": v, "kl_all": v} for k, v in change.items()}
    best = best_assignment(units, widths, base, change, nbytes, "kl_answer")
    # (4, 2): 10 - 3 + 1 = 8 within the bytes; (4, 4) would be 6.5 but one step over; (3, 3) is 10
    assert best["assignment"] == {"sensitive": 4, "robust": 2}
    assert best["predicted"] == 8.0 and best["ratio"] == 0.8
    assert predicted(units, {"sensitive": 2, "robust": 4}, base, change, "kl_all") == 14.5


def test_best_assignment_keeps_uniform_when_no_trade_pays():
    widths = (2, 3, 4)
    units = ["a", "b"]
    nbytes = {(u, w): w - 3 for u in units for w in widths}
    base = {"kl_answer": 1.0}
    change = {(u, w): {"kl_answer": {2: 0.5, 3: 0.0, 4: -0.2}[w]} for u in units for w in widths}
    best = best_assignment(units, widths, base, change, nbytes, "kl_answer")
    assert best["assignment"] == {"a": 3, "b": 3} and best["ratio"] == 1.0
