#!/usr/bin/env python3
"""Plots EER against test-side SIR for several models on one figure.

Reads the ``summary.json`` that ``verify.py --conditions ...`` writes for
each model and draws one line per model through its ``sir<dB>`` results,
with its clean-test EER as a dashed reference. Conditions with noise are
left out: the x axis is the interfering talker's SIR alone.

Example:
    python verify.py --model results/aam_softmax/1986/export ... \\
        --conditions clean sir0 sir5 sir10
    python verify.py --model results/csc/1986/export ... \\
        --conditions clean sir0 sir5 sir10
    python plot_robustness.py \\
        --reports results/aam_softmax/1986/verify/summary.json \\
                  results/csc/1986/verify/summary.json \\
        --names aam_softmax csc --out results/eer_vs_sir.png
"""

import argparse
import json
import sys

from speechbrain_ext.scoring.plots import plot_eer_vs_sir


def parse_args(argv):
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--reports",
        nargs="+",
        required=True,
        help="summary.json files written by verify.py",
    )
    parser.add_argument(
        "--names",
        nargs="+",
        default=None,
        help="one legend name per report (default: the report's system name)",
    )
    parser.add_argument(
        "--out", default="eer_vs_sir.png", help="image file to write"
    )
    parser.add_argument(
        "--enrol_mode",
        default=None,
        help="enrolment mode to plot, e.g. concat or avg "
        "(default: the first one of each report)",
    )
    parser.add_argument(
        "--score_norm",
        default=None,
        help="score normalisation to plot (default: the "
        "first one of each report)",
    )
    parser.add_argument("--title", default="EER against SIR")
    args = parser.parse_args(argv)
    if args.names is not None and len(args.names) != len(args.reports):
        parser.error(
            f"{len(args.names)} --names for {len(args.reports)} --reports"
        )
    return args


def eer_by_sir(report_path, enrol_mode=None, score_norm=None):
    """The EER (%) of each pure-SIR condition and of the clean test side.

    Arguments
    ---------
    report_path : str
        A ``summary.json`` written by ``verify.py``.
    enrol_mode : str, optional
        Keep results of this enrolment mode (default: the first result's).
    score_norm : str, optional
        Keep results of this score normalisation (default: the first's).

    Returns
    -------
    system : str
        The report's system name.
    points : dict
        SIR in dB (float) or ``"clean"`` -> EER in %.

    Example
    -------
    >>> path = getfixture("tmpdir") / "summary.json"
    >>> row = {"enrol_mode": "concat", "score_norm": "none", "snr_db": None}
    >>> _ = path.write_text(
    ...     json.dumps(
    ...         {
    ...             "system": "csc",
    ...             "results": {
    ...                 "concat": {
    ...                     **row,
    ...                     "test_condition": "clean",
    ...                     "sir_db": None,
    ...                     "EER": 0.1,
    ...                 },
    ...                 "concat@sir5": {
    ...                     **row,
    ...                     "test_condition": "sir5",
    ...                     "sir_db": 5.0,
    ...                     "EER": 0.2,
    ...                 },
    ...             },
    ...         }
    ...     ),
    ...     "utf-8",
    ... )
    >>> eer_by_sir(str(path))
    ('csc', {'clean': 10.0, 5.0: 20.0})
    """
    with open(report_path, encoding="utf-8") as fin:
        report = json.load(fin)
    results = list(report["results"].items())
    for key, result in results:
        if "test_condition" not in result:
            raise ValueError(
                f"{report_path}: result {key!r} names no test_condition; "
                "rerun verify.py (with --conditions) to write one"
            )
    first = results[0][1] if results else {}
    enrol_mode = enrol_mode or first.get("enrol_mode")
    score_norm = score_norm or first.get("score_norm")
    points = {}
    for _, result in results:
        if (result["enrol_mode"], result["score_norm"]) != (
            enrol_mode,
            score_norm,
        ) or result["snr_db"] is not None:
            continue
        sir = "clean" if result["sir_db"] is None else result["sir_db"]
        points[sir] = 100.0 * result["EER"]
    if not any(sir != "clean" for sir in points):
        raise ValueError(
            f"{report_path} has no sir<dB> result for enrol_mode "
            f"{enrol_mode!r} and score_norm {score_norm!r}: run verify.py "
            "with e.g. --conditions clean sir0 sir5 sir10"
        )
    return report["system"], points


def main(argv=None):
    """Reads the reports and writes the figure."""
    args = parse_args(argv)
    systems = {}
    for index, path in enumerate(args.reports):
        system, points = eer_by_sir(path, args.enrol_mode, args.score_norm)
        name = args.names[index] if args.names else system
        if name in systems:
            raise ValueError(f"two reports are named {name!r}: use --names")
        systems[name] = points
    plot_eer_vs_sir(systems, args.out, title=args.title)
    print(f"EER against SIR written to {args.out}")
    return systems


if __name__ == "__main__":
    main(sys.argv[1:])
