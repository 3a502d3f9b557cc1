"""numopt.ot._demo.demo runs and prints one row per solver and case."""
from numopt.ot._demo import demo


def test_demo_prints_every_solver(capsys):
    demo(quick=True)
    out = capsys.readouterr().out
    for name in ("numopt sns", "numopt sinkhorn_log", "numopt sinkhorn", "POT sinkhorn", "POT sinkhorn_log"):
        assert out.count(name) >= 2, name
    rows = [line for line in out.splitlines() if line.strip().startswith(("random", "2-D"))]
    assert len(rows) == 10
    # our solvers reach the target on these cases
    for line in rows:
        if "numopt" in line:
            assert float(line.split()[-2]) <= 1e-8, line
