"""Great Expectations 1.x suites for the ingest tables, with results as JSON and Data Docs HTML."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from her2pcr.config import IngestParams


@dataclass(frozen=True)
class SuiteOutcome:
    name: str
    success: bool
    failed_expectations: list[str]
    patient_failures: dict[str, list[str]]  # patient_id -> failed expectation descriptions


def clinical_expectations(params: IngestParams, institutions: list[str]) -> list:
    """Columns, types, ranges, value sets, unique ids and the label set of clinical.csv."""
    import great_expectations as gx

    e = gx.expectations
    return [
        *[e.ExpectColumnToExist(column=c) for c in params.clinical_columns],
        e.ExpectColumnValuesToBeUnique(column="patient_id"),
        e.ExpectColumnValuesToNotBeNull(column="patient_id"),
        e.ExpectColumnValuesToNotBeNull(column="pcr"),
        e.ExpectColumnValuesToBeInSet(column="pcr", value_set=[0, 1]),
        e.ExpectColumnValuesToBeBetween(column="age", min_value=params.age_range[0], max_value=params.age_range[1]),
        e.ExpectColumnValuesToNotBeNull(column="age"),
        e.ExpectColumnValuesToBeBetween(column="longest_diameter_mm", min_value=params.diameter_range_mm[0],
                                        max_value=params.diameter_range_mm[1]),
        *[e.ExpectColumnValuesToBeInSet(column=c, value_set=["positive", "negative"])
          for c in ("er", "pr", "lymph_node")],
        e.ExpectColumnValuesToBeInSet(column="stage", value_set=["I", "II", "III", "IV"]),
        e.ExpectColumnValuesToBeInSet(column="institution", value_set=institutions),
    ]


def cohort_expectations(cohort_names: list[str]) -> list:
    """One row per patient: a patient id can never appear in two cohorts."""
    import great_expectations as gx

    e = gx.expectations
    return [e.ExpectColumnValuesToBeUnique(column="patient_id"),
            e.ExpectColumnValuesToBeInSet(column="cohort", value_set=cohort_names)]


def box_expectations() -> list:
    import great_expectations as gx

    e = gx.expectations
    checks = [e.ExpectColumnValuesToBeUnique(column="patient_id")]
    for axis, size in (("row", "rows"), ("column", "columns"), ("slice", "slices")):
        checks += [
            e.ExpectColumnValuesToBeBetween(column=f"{axis}_start", min_value=0),
            e.ExpectColumnPairValuesAToBeGreaterThanB(column_A=f"{axis}_end", column_B=f"{axis}_start",
                                                      or_equal=True),
            e.ExpectColumnPairValuesAToBeGreaterThanB(column_A=size, column_B=f"{axis}_end"),
        ]
    return checks


def acquisition_expectations() -> list:
    import great_expectations as gx

    e = gx.expectations
    return [
        e.ExpectColumnValuesToBeUnique(column="patient_id"),
        e.ExpectColumnValuesToBeInSet(column="field_strength_t", value_set=[1.0, 1.5, 3.0]),
        e.ExpectColumnValuesToBeBetween(column="repetition_time_ms", min_value=2.0, max_value=12.0),
        e.ExpectColumnValuesToBeBetween(column="echo_time_ms", min_value=0.5, max_value=6.0),
        e.ExpectColumnValuesToBeBetween(column="flip_angle_deg", min_value=5.0, max_value=30.0),
        e.ExpectColumnValuesToBeBetween(column="pixel_spacing_mm", min_value=0.2, max_value=2.0),
        e.ExpectColumnValuesToBeBetween(column="slice_thickness_mm", min_value=0.5, max_value=5.0),
        e.ExpectColumnValuesToBeBetween(column="n_post_phases", min_value=1, max_value=10),
        e.ExpectColumnValuesToBeBetween(column="mean_time_between_phases_s", min_value=10, max_value=400),
    ]


def describe(config) -> str:
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "result_format")}
    return f"{config.type}({', '.join(f'{k}={v}' for k, v in kwargs.items())})"


def run_suites(tables: dict[str, tuple[pd.DataFrame, list]], out_dir: Path) -> dict[str, SuiteOutcome]:
    """Validate each table against its expectations; write <name>.json and Data Docs under out_dir/docs."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")  # no network at run time
    import great_expectations as gx

    out_dir.mkdir(parents=True, exist_ok=True)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    docs_dir = str((out_dir / "docs").resolve())  # GX requires an absolute site directory
    context.add_data_docs_site(site_name="her2pcr", site_config={
        "class_name": "SiteBuilder", "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": docs_dir},
    })
    source = context.data_sources.add_pandas("ingest")
    outcomes = {}
    for name, (frame, expectations) in tables.items():
        frame = frame.reset_index(drop=True)
        batch = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe(f"{name}-all")
        suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
        validation = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
        checkpoint = context.checkpoints.add(gx.Checkpoint(
            name=f"{name}-checkpoint", validation_definitions=[validation],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=["her2pcr"])],
            result_format={"result_format": "COMPLETE"},
        ))
        result = checkpoint.run(batch_parameters={"dataframe": frame})
        validation_result = next(iter(result.run_results.values()))
        (out_dir / f"{name}.json").write_text(json.dumps(validation_result.to_json_dict(), indent=1, default=str))
        failures: dict[str, list[str]] = {}
        failed = []
        for item in validation_result.results:
            if item.success:
                continue
            text = describe(item.expectation_config)
            failed.append(text)
            for index in item.result.get("unexpected_index_list") or []:
                row = index if isinstance(index, int) else index.get("index", None) if isinstance(index, dict) else None
                if row is not None and row < len(frame):
                    failures.setdefault(str(frame.loc[row, "patient_id"]), []).append(f"data quality: {text}")
        outcomes[name] = SuiteOutcome(name, bool(validation_result.success), failed, failures)
    return outcomes
