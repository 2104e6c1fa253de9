"""Reference values for crates/optim/tests/golden.rs.

Written from the update rules of common/optimizer.py in "Deep Learning from Scratch"
(Saitoh), not from the Rust code. Arithmetic is exact decimal with 50 significant digits,
so the printed numbers carry no binary rounding. The same rules are also run in Python
floats (binary64) to show how far plain f64 rounding moves each result; the Rust test
allows a relative error of 1e-12, far above that drift.

Problem: f(p) = 1/2 * sum(a_i * p_i^2), so grad_i = a_i * p_i; weight decay wd adds
wd * p_i to the gradient before the rule. Three steps from P0, state starting at zero.
Run: python3 crates/optim/tests/golden_reference.py
"""
import math
from decimal import Decimal, getcontext

getcontext().prec = 50
STEPS = 3


def run(num, sqrt, name, wd):
    a = [num("1"), num("3"), num("0.25")]
    p = [num("1"), num("-0.5"), num("2")]
    # RMSprop gets a smaller rate: at 0.1 its first step (lr / sqrt(1 - decay) = 1, times
    # sign(g)) would land p_0 on 1e-11, where a relative tolerance means nothing.
    lr = num("0.01") if name == "rmsprop" else num("0.1")
    eps = num("1e-7")
    mom, decay, beta1, beta2 = num("0.9"), num("0.99"), num("0.9"), num("0.999")
    wd = num(wd)
    one = num("1")
    slots = {"sgd": 0, "momentum": 1, "nesterov": 1, "adagrad": 1, "rmsprop": 1, "adam": 2}[name]
    s = [[num("0")] * len(p) for _ in range(slots)]
    for t in range(1, STEPS + 1):
        g = [ai * x + wd * x for ai, x in zip(a, p)]
        for i in range(len(p)):
            gi = g[i]
            if name == "sgd":
                p[i] = p[i] - lr * gi
            elif name == "momentum":
                s[0][i] = mom * s[0][i] - lr * gi
                p[i] = p[i] + s[0][i]
            elif name == "nesterov":
                # The book's order: the velocity is updated first, and the NEW velocity
                # enters the parameter update.
                s[0][i] = mom * s[0][i] - lr * gi
                p[i] = p[i] + mom * mom * s[0][i] - (one + mom) * lr * gi
            elif name == "adagrad":
                s[0][i] = s[0][i] + gi * gi
                p[i] = p[i] - lr * gi / (sqrt(s[0][i]) + eps)
            elif name == "rmsprop":
                s[0][i] = decay * s[0][i] + (one - decay) * gi * gi
                p[i] = p[i] - lr * gi / (sqrt(s[0][i]) + eps)
            elif name == "adam":
                lr_t = lr * sqrt(one - beta2 ** t) / (one - beta1 ** t)
                s[0][i] = s[0][i] + (one - beta1) * (gi - s[0][i])
                s[1][i] = s[1][i] + (one - beta2) * (gi * gi - s[1][i])
                p[i] = p[i] - lr_t * s[0][i] / (sqrt(s[1][i]) + eps)
    return p + [x for block in s for x in block]


for wd in ("0", "0.1"):
    for name in ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"):
        exact = run(Decimal, lambda x: x.sqrt(), name, wd)
        approx = run(float, math.sqrt, name, wd)
        drift = max(abs(Decimal(f) - e) / abs(e) for f, e in zip(approx, exact))
        smallest = min(abs(e) for e in exact)
        print(f"// {name}, weight_decay = {wd}: smallest |value| {float(smallest):.3g}, "
              f"f64 drift {float(drift):.2g}")
        print("[" + ", ".join(f"{float(e)!r}" for e in exact) + "],")
