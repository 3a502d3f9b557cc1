def test_demo_runs(capsys):
    from numopt.relu._demo import demo
    demo(quick=True)
    out = capsys.readouterr().out
    assert "numopt admm" in out and "numopt admm-rbcd" in out and "CVXPY" in out and "MLPClassifier" in out
