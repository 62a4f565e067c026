import dagster as dg

from assets.resources import EexitResource
from eexit_core.report.factor_report import build_report


@dg.asset(group_name="results", kinds={"markdown"}, deps=["eas_scores"])
def factor_report(eexit: EexitResource) -> dg.MaterializeResult:
    """Markdown report with similarity curves, EAS by model and workload, oracle bounds."""
    ws = eexit.workspace
    report = build_report(ws.results_db, ws.reports_dir)
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.md(report.text),
            "path": dg.MetadataValue.path(str(report.markdown)),
            **{f"plot_{p.stem}": dg.MetadataValue.path(str(p)) for p in report.plots},
        }
    )
