"""How far the golden Adam trajectories are defined to 1e-9: the reference's own float64
Adam (numpy, as in ../shared/golden/README.md) from a0 and from a0·(1 + 1e-15).

Usage: python scripts/adam_sensitivity.py [tests/data/gd_trajectories.npz]

Prints, per Adam case and stored step k, the largest parameter difference between the two
runs relative to max|θ_k|. Where it exceeds 1e-9 the trajectory amplifies round-off
(the crossed kinks make it chaotic), so no other implementation can match the stored
values there; tests/test_golden.py checks Adam only up to the last step below 1e-9.
"""

from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "data" / "gd_trajectories.npz"


def adam_trajectory(case, steps, scale=1.0, b1=0.9, b2=0.999, eps=1e-8):
    x, y, p, lr = case["x"], case["y"], case["xw"], float(case["lr"])
    theta = [case["a0"] * scale, case["b0"].copy(), case["w0"].copy(), np.array(float(case["c0"]))]
    m = [np.zeros_like(t) for t in theta]
    v = [np.zeros_like(t) for t in theta]
    out = {}
    for t in range(1, max(steps) + 1):
        a, b, w, c = theta
        z = x[:, None] * a + b
        on = z >= 0
        act = np.where(on, z, 0.0)
        r = p * (c + act @ w - y)
        grads = [(r[:, None] * on * x[:, None]).sum(0) * w, (r[:, None] * on).sum(0) * w]
        grads += [(r[:, None] * act).sum(0), np.array(r.sum())]
        for k in range(4):
            m[k] = b1 * m[k] + (1 - b1) * grads[k]
            v[k] = b2 * v[k] + (1 - b2) * grads[k] ** 2
            m_hat, v_hat = m[k] / (1 - b1**t), v[k] / (1 - b2**t)
            theta[k] = theta[k] - lr * m_hat / (np.sqrt(v_hat) + eps)
        if t in steps:
            out[t] = [q.copy() for q in theta]
    return out


def main(path=GOLDEN):
    golden = np.load(path)
    steps = [int(s) for s in golden["steps"]]
    for i, name in enumerate(golden["cases"]):
        if not str(name).endswith("adam"):
            continue
        case = {k[len(f"case{i}_") :]: golden[k] for k in golden.files if k.startswith(f"case{i}_")}
        base = adam_trajectory(case, steps)
        moved = adam_trajectory(case, steps, scale=1.0 + 1e-15)
        for k in steps:
            scale = max(np.max(np.abs(q)) for q in base[k])
            diff = max(np.max(np.abs(u - v)) for u, v in zip(base[k], moved[k], strict=True))
            print(f"case {i} ({name}) step {k:>6}: relative change {diff / scale:.1e}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", nargs="?", default=GOLDEN,
                        help="the golden trajectories (NPZ) (default: the repository's "
                        "tests/data/gd_trajectories.npz)")  # fmt: skip
    main(parser.parse_args().path)
