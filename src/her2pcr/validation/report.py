"""The validation report: one self-contained HTML page (gate first, then the evidence), ROC figure inlined."""

from __future__ import annotations

import base64
import io
from html import escape

import pandas as pd

STYLE = """body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}.gate{padding:.8em 1.2em;border-radius:6px;margin:1em 0}
.pass{background:#e6f4ea;border:2px solid #1e8e3e}.fail{background:#fce8e6;border:2px solid #d93025}
li.pass,li.fail{background:none;border:none}li.fail{color:#b3261e}.note{color:#555}
.warnings{background:#fef7e0;border:1px solid #f9ab00;padding:.5em 1.2em;border-radius:6px}"""


def roc_png(y_true, scores, title: str) -> bytes:
    """The empirical ROC curve as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from her2pcr.stats.roc import roc_curve_points

    points = roc_curve_points(y_true, scores)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(points.fpr, points.tpr, drawstyle="steps-post")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def forest_png(variables: list[dict], title: str) -> bytes | None:
    """Forest plot of subgroup AUCs with DeLong 95 % CIs, one row per subgroup that has an AUC (None if none)."""
    rows = [(f"{v['variable']}: {g['group']} (n {g['n']})", g) for v in variables for g in v["groups"]
            if g["auc"] is not None]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 0.35 * len(rows) + 1.2))
    for k, (_, g) in enumerate(rows):
        ax.plot([g["auc_ci_low"], g["auc_ci_high"]], [k, k], color="0.4")
        ax.plot(g["auc"], k, "s", color="C0" if g["judged"] else "0.6")
    ax.axvline(0.5, color="grey", linestyle=":")
    ax.set(yticks=range(len(rows)), yticklabels=[label for label, _ in rows], xlim=(0, 1), ylim=(len(rows) - 0.5, -0.5),
           xlabel="AUC, DeLong 95 % CI (grey: not judged)", title=title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def subgroup_rows(variables: list[dict]) -> list[dict]:
    """The subgroup table: one row per subgroup, its variable's disparity on the first row."""
    rows = []
    for v in variables:
        disparity = "n/a (fewer than two judged subgroups)" if v["disparity"] is None else \
            f"{v['disparity']:.3f} [{v['disparity_ci_low']:.3f}-{v['disparity_ci_high']:.3f}]"
        for k, g in enumerate(v["groups"]):
            auc = "n/a" if g["auc"] is None else f"{g['auc']:.3f} [{g['auc_ci_low']:.3f}-{g['auc_ci_high']:.3f}]"
            rows.append({"variable": v["variable"] if k == 0 else "", "subgroup": g["group"], "n": g["n"],
                         "pCR": g["n_pcr"], "AUC (DeLong 95 % CI)": auc, "TPR": g["tpr"], "FPR": g["fpr"],
                         "judged": "yes" if g["judged"] else f"no: {g['note']}",
                         "equalized-odds disparity (95 % CI)": disparity if k == 0 else ""})
    return rows


def _png(image: bytes, alt: str) -> str:
    return f"<img alt='{escape(alt)}' src='data:image/png;base64,{base64.b64encode(image).decode()}'>"


def _table(rows: list[dict] | pd.DataFrame, empty: str = "none") -> str:
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    if frame.empty:
        return f"<p class='note'>{escape(empty)}</p>"
    return frame.to_html(index=False, na_rep="n/a", float_format=lambda v: f"{v:.4g}", border=0)


def _metrics_rows(metrics: dict) -> list[dict]:
    if "auc" not in metrics:
        return []
    return [
        {"statistic": "AUC (DeLong 95 % CI)",
         "value": f"{metrics['auc']:.3f} [{metrics['delong_ci_low']:.3f}-{metrics['delong_ci_high']:.3f}]"},
        {"statistic": f"AUC bootstrap 95 % CI ({metrics['n_bootstrap']} resamples)",
         "value": f"{metrics['bootstrap_ci_low']:.3f}-{metrics['bootstrap_ci_high']:.3f}"},
        {"statistic": "p (AUC = 0.5, DeLong)", "value": f"{metrics['delong_p_value']:.4g}"},
        *({"statistic": f"{key.replace('_', ' ')} at {metrics['threshold']:g}", "value": f"{metrics[key]:.3f}"}
          for key in ("accuracy", "balanced_accuracy", "sensitivity", "specificity")),
        {"statistic": "TP / FN / TN / FP", "value": f"{metrics['tp']} / {metrics['fn']} / {metrics['tn']} / "
                                                     f"{metrics['fp']}"},
    ]


def render_html(results: dict, roc: bytes | None = None) -> str:
    """The page of ``results`` (what metrics/validate/<cohort>.json holds)."""
    cohort, model, gate = results["cohort"], results["model"], results["gate"]
    quality, correlations = results["data_quality"], results["correlations"]
    protocol, warnings = results.get("protocol"), results.get("shift_warnings", [])
    reasons = "".join(f"<li class='{'pass' if check['passed'] else 'fail'}'>{escape(check['reason'])}</li>"
                      for check in gate["checks"].values())
    warning_items = "".join(f"<li>{escape(w['text'])}</li>" for w in warnings)
    warning_box = (f"<div class='warnings'><h3>Protocol shift warnings (not gated)</h3><ul>{warning_items}</ul>"
                   f"</div>" if warnings else "<p class='note'>No protocol shift warning: every acquisition "
                   "descriptor within what training saw.</p>")
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Validation {escape(cohort)}</title>"
        f"<style>{STYLE}</style></head><body>",
        f"<h1>External validation on {escape(cohort)}</h1>",
        f"<p>Model <code>{escape(model['name'])}</code> version {escape(str(model['version']))} "
        f"(run <code>{escape(model['run_id'])}</code>); data-quality expectations derived from "
        f"{escape(results['train_cohort'])}. Research use only.</p>",
        f"<div class='gate {gate['decision']}'><h2>Gate: {gate['decision'].upper()}</h2><ul>{reasons}</ul></div>",
        warning_box,
        f"<h2>Model metrics (n = {results['n']}, {results['n_pcr']} pCR)</h2>",
        _table(_metrics_rows(results["metrics"]), results["metrics"].get("note", "no metrics")),
    ]
    if results["not_evaluated"]:
        parts.append(f"<p class='note'>Not evaluated (missing model phases): "
                     f"{escape(', '.join(results['not_evaluated']))}</p>")
    if roc is not None:
        parts.append(_png(roc, "ROC curve"))
    forest = forest_png(results["fairness"], f"{cohort}: subgroup AUCs")
    parts += [
        "<h2>Subgroups and fairness</h2><p>TPR and FPR at the threshold; the equalized-odds disparity of a variable is "
        "the range of TPR plus the range of FPR over its judged subgroups (enough patients of each class; the note "
        "says why a subgroup is not judged).</p>",
        _table(subgroup_rows(results["fairness"]), "no subgroup"),
        *([_png(forest, "forest plot of subgroup AUCs")] if forest is not None else []),
    ]
    parts += [
        f"<h2>Acquisition parameters and predictions</h2><p>Spearman correlation, Benjamini-Hochberg adjusted; "
        f"{correlations['n_significant']} with adjusted p &lt; {correlations['alpha']:g}.</p>",
        _table(correlations["parameters"], "no correlation tested"),
        "<h2>Subsets</h2>",
    ]
    for name, rows in results["subsets"].items():
        parts += [f"<h3>{escape(name.replace('_', ' '))}</h3>", _table(rows)]
    inputs = ", ".join(quality.get("inputs", []))
    parts += [
        f"<h2>Data quality</h2><p>Expectations derived from {escape(results['train_cohort'])} "
        f"(<a href='docs/index.html'>Great Expectations Data Docs</a>).</p>",
        f"<h3>Model inputs (gated)</h3><p>{quality['n_outside']} of {quality['n_patients']} patients outside the "
        f"expectations on the model's inputs ({escape(inputs)}): phases present, VOI size, slice stacks and "
        f"statistics of the standardised inputs.</p>",
        _table(quality["violations"], "every patient within the expectations"),
        "<details><summary>Model-input expectations</summary>", _table(quality["expectations"]), "</details>",
    ]
    if protocol is not None:
        parts += [
            f"<h3>Acquisition protocol (warnings only)</h3><p>{protocol['n_outside']} of {protocol['n_patients']} "
            f"patients outside the protocol seen in training; a shift here is reported, not gated.</p>",
            _table(protocol["violations"], "every patient within the training protocol"),
            "<details><summary>Protocol expectations</summary>", _table(protocol["expectations"]), "</details>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts)
