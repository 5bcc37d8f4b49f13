"""Attack: spawn a shell that reads the reference, overwrites a grade file and plants another.

Contained: the shell is a child of the worker, confined exactly like it. TARGET: [reference,
grade file, folder to plant in].
"""

import subprocess

TARGET: list = []


def scaled_dot_product_attention(q, k, v):
    reference, grades, folder = TARGET
    script = f"cat {reference}; echo learner,100 > {grades}; echo x > {folder}/pwned; id -u"
    done = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=10)
    return done.stdout + done.stderr
