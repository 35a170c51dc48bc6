#!/usr/bin/env python3
"""Run mil_check.check over many packages in one process (coremltools takes
seconds to import, and the lowering suite checks one package per op).

    mil_check_many.py JOBS.json

JOBS.json: [{"package": P, "inputs": IN.npz or null, "outputs": OUT.npz or
null}, ...]. Prints a JSON list of mil_check reports, in job order.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mil_check  # noqa: E402


def main():
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    reports = []
    for j in jobs:
        try:
            reports.append(mil_check.check(j["package"], j.get("inputs"), j.get("outputs")))
        except Exception as e:  # one broken package must not hide the others
            reports.append({"package": j["package"], "valid": False,
                            "errors": ["mil_check crashed: %s: %s" % (type(e).__name__, e)]})
    json.dump(reports, sys.stdout)


if __name__ == "__main__":
    main()
