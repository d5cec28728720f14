"""Register, validate, promote and serve the tiny model with the real MLflow registry and `mlflow models serve`."""

import base64
import io
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import requests
import yaml

from her2pcr.dicom.discover import discover
from her2pcr.dicom.phases import order_phases
from her2pcr.serving.client import exam_record, tensors_record
from her2pcr.serving.model import BOX_FIELDS
from her2pcr.serving.server import local_server
from tests.conftest import REPO, profile_params, run_command

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MODEL = "her2pcr-dce"
TINY = profile_params("tiny")
PHASES = list(TINY.train.phases)  # the model's inputs (no tune: train reads params.yaml)
SIZE = TINY.preprocess.input_size
EXAM_N4_TOLERANCE = 0.02  # |P(pCR)| of an exam request vs the training chain's (README, "Exam latency")
LATE = [p for p in PHASES if p.endswith("3")]  # inputs that need the third post-contrast phase
assert LATE, "the tests below drop post3 from an exam and expect the model to miss an input"


def her2pcr(args, cwd, check=True):
    return run_command(["her2pcr", *args], cwd, check)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_cohort):
    """The tiny cohort ingested, preprocessed, trained and registered through the CLI, in a fresh folder."""
    ws = tmp_path_factory.mktemp("serving")
    shutil.copy(REPO / "params.yaml", ws / "params.yaml")
    shutil.copytree(REPO / "conf", ws / "conf")
    (ws / "data" / "raw").mkdir(parents=True)
    (ws / "data" / "raw" / "synthetic").symlink_to(tiny_cohort)
    for command in (["profile", "tiny"], ["ingest", "--no-progress"], ["preprocess", "--no-progress"], ["train"],
                    ["register"]):
        her2pcr(command, ws)
    return ws


@pytest.fixture(scope="module")
def client(workspace):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")


def strict_params(workspace: Path) -> Path:
    """The workspace's params with a gate no 2-epoch model meets."""
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["validation"]["gate"].update(min_auc=0.99, min_auc_ci_low=0.9)
    params["validation"]["reports_dir"] = "reports/validation-strict"
    params["validation"]["metrics_dir"] = "metrics/validate-strict"
    params["validation"]["gate_dir"] = "metrics/gate-strict"
    path = workspace / "params-strict.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_train_registers_a_challenger_with_lineage_card_signature_and_example(workspace, client):
    record = json.loads((workspace / "models" / "registered.json").read_text())
    assert record["name"] == MODEL
    version = client.get_model_version_by_alias(MODEL, "challenger")
    assert str(version.version) == record["version"]
    assert {"git_commit", "data_version", "params_hash", "phases", "chain_fingerprint"} <= set(version.tags)
    assert version.tags["phases"] == ",".join(PHASES)
    assert "research only" in version.description
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{workspace / 'mlflow.db'}")
    info = mlflow.models.get_model_info(f"models:/{MODEL}/{record['version']}")
    assert {c["name"] for c in info.signature.inputs.to_dict()} >= {"dicom_zip", "tensors", *BOX_FIELDS}
    assert info.saved_input_example_info is not None


def test_promotion_refuses_a_failed_gate_and_records_an_override(workspace, client):
    strict = strict_params(workspace)
    for cohort in ("D3", "D4"):
        her2pcr(["validate", "--cohort", cohort, "--params-file", str(strict)], workspace)
    version = client.get_model_version_by_alias(MODEL, "challenger")
    assert version.tags["validation.D3.gate"] == "fail"
    refused = her2pcr(["promote"], workspace, check=False)
    assert refused.returncode == 1
    assert "not promoted" in refused.stderr and "D3: gate fail" in refused.stderr
    assert "champion" not in client.get_registered_model(MODEL).aliases
    assert her2pcr(["promote", "--force"], workspace, check=False).returncode == 1  # no reason given
    her2pcr(["promote", "--force", "--reason", "test override"], workspace)
    forced = client.get_model_version(MODEL, version.version)
    assert forced.tags["promotion.forced"] == "true"
    assert forced.tags["promotion.reason"] == "test override"
    assert "D3: gate fail" in forced.tags["promotion.overridden_gates"]


@pytest.fixture(scope="module")
def promoted(workspace, client):
    """Validated on D3 and D4 under the tiny profile's gate, then promoted without override."""
    for cohort in ("D3", "D4"):
        her2pcr(["validate", "--cohort", cohort], workspace)
    her2pcr(["promote"], workspace)
    version = client.get_model_version_by_alias(MODEL, "champion")
    assert version.tags["validation.D3.gate"] == version.tags["validation.D4.gate"] == "pass"
    assert version.tags["promotion.forced"] == "false"
    listing = her2pcr(["registry"], workspace).stdout
    assert "challenger,champion" in listing and "pass" in listing
    return version


@pytest.fixture(scope="module")
def server(workspace, promoted):
    log_path = workspace / "serve.log"
    with open(log_path, "w") as log, local_server(f"models:/{MODEL}@champion", f"sqlite:///{workspace / 'mlflow.db'}",
                                                   workspace, log=log) as url:
        yield {"url": url, "log": log_path, "responses": []}


def invoke(server, body, content_type="application/json"):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    response = requests.post(f"{server['url']}/invocations", data=data, headers={"Content-Type": content_type},
                             timeout=300)
    server["responses"].append(response.text)
    return response


def box_of(workspace, patient):
    clinical = pd.read_parquet(workspace / "data" / "interim" / "clinical.parquet").set_index("patient_id")
    return tuple(int(clinical.loc[patient, c]) for c in BOX_FIELDS)


def exam_dir(workspace, patient):
    return workspace / "data" / "raw" / "synthetic" / "dicom" / patient


def external_patients(workspace):
    """External patients with the model's inputs (exams with at least four phases)."""
    index = pd.read_parquet(workspace / "data" / "processed" / "index.parquet")
    usable = index.cohort.isin(["D3", "D4"]) & index.phases.str.split(";").map(lambda p: set(PHASES) <= set(p))
    return sorted(index.patient_id[usable])


def test_served_exam_probability_equals_in_process_and_training_inputs(workspace, server):
    import keras
    import mlflow

    from her2pcr.models.cnn import predict_probability
    from her2pcr.training.data import central_slice

    mlflow.set_tracking_uri(f"sqlite:///{workspace / 'mlflow.db'}")
    in_process = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    # the training chain exactly: N4 on the exam shrunk as preprocess does, not serve.exam_n4_shrink_factor
    exact = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion", model_config={"exam_n4_shrink_factor": None})
    assert TINY.serve.exam_n4_shrink_factor != TINY.preprocess.n4_shrink_factor
    keras_model = keras.saving.load_model(workspace / "models" / "cnn" / "model.keras", compile=False)
    answers = []
    for patient in external_patients(workspace):
        record = exam_record(exam_dir(workspace, patient), box_of(workspace, patient))
        response = invoke(server, {"dataframe_records": [record]})
        assert response.status_code == 200, response.text
        served = response.json()["predictions"][0]
        local = in_process.predict(pd.DataFrame([record])).iloc[0]
        with np.load(workspace / "data" / "processed" / f"{patient}.npz") as stacks:
            middle = central_slice(len(stacks[PHASES[0]]), TINY.train.central_stack_fraction)
            offline = float(np.mean(predict_probability(keras_model, {p: stacks[p][middle] for p in PHASES})))
        assert served["probability"] == pytest.approx(local["probability"], abs=1e-9)
        # the version averages its members' means, the Keras ensemble averages per stack: float32 rounding apart
        assert float(exact.predict(pd.DataFrame([record]))["probability"].iloc[0]) == pytest.approx(offline, abs=1e-6)
        assert served["probability"] == pytest.approx(offline, abs=EXAM_N4_TOLERANCE)  # the coarser N4 field
        assert served["probability"] == pytest.approx(np.mean(json.loads(served["members"])), abs=1e-12)
        assert served["label"] == int(served["probability"] >= 0.5)
        assert served["phases"] == ",".join(PHASES) and served["input"] == "exam"
        assert isinstance(json.loads(served["warnings"]), list)
        answers.append(served["probability"])
    assert answers[0] != answers[1]


def answers_for_the_same_exam(workspace, server, cohort: Path) -> list[dict]:
    """The served answers to an external patient's exam as ``cohort`` stores it and as the workspace does."""
    patient = external_patients(workspace)[0]
    answers = []
    for folder in (cohort / "dicom" / patient, exam_dir(workspace, patient)):
        response = invoke(server, {"dataframe_records": [exam_record(folder, box_of(workspace, patient))]})
        assert response.status_code == 200, response.text
        answers.append(response.json()["predictions"][0])
    assert answers[0]["probability"] == pytest.approx(answers[1]["probability"], abs=1e-9)
    return answers


def test_a_whole_study_with_non_dce_series_gets_the_answer_of_its_dce_series(workspace, server, extra_series_cohort):
    answers = answers_for_the_same_exam(workspace, server, extra_series_cohort)
    skipped = [w for w in json.loads(answers[0]["warnings"]) if "not used:" in w]
    assert len(skipped) == 5, skipped
    assert any("'ax t1 non fs' not used" in w and "outside the dynamic group" in w for w in skipped)


def test_an_enhanced_mr_exam_gets_the_answer_of_its_classic_files(workspace, server, enhanced_cohort):
    answers = answers_for_the_same_exam(workspace, server, enhanced_cohort)
    assert not [w for w in json.loads(answers[0]["warnings"]) if "not used:" in w]


def test_served_tensors_give_the_same_probability(workspace, server):
    patient = external_patients(workspace)[0]
    with np.load(workspace / "data" / "processed" / f"{patient}.npz") as stacks:
        # extra inputs are ignored; stored float16 values are the chain's own (it rounds to float16)
        record = tensors_record({p: stacks[p].astype(np.float32) for p in (*PHASES, "post1")})
    exam = exam_record(exam_dir(workspace, patient), box_of(workspace, patient))
    responses = [invoke(server, {"dataframe_records": [row]}) for row in (record, exam)]
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    tensors_answer, exam_answer = (r.json()["predictions"][0] for r in responses)
    assert tensors_answer["input"] == "tensors"
    # the exam's N4 runs on a coarser grid (serve.exam_n4_shrink_factor); the exact chain is checked above
    assert tensors_answer["probability"] == pytest.approx(exam_answer["probability"], abs=EXAM_N4_TOLERANCE)
    # the CLI with --tensors needs no --box
    answer = her2pcr(["predict", "--url", server["url"], "--tensors", str(workspace / "data" / "processed" /
                                                                          f"{patient}.npz")], workspace)
    assert json.loads(answer.stdout)["probability"] == pytest.approx(tensors_answer["probability"], abs=1e-9)


def zip_b64(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return base64.b64encode(buffer.getvalue()).decode()


def tensors_b64(**arrays) -> str:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return base64.b64encode(buffer.getvalue()).decode()


def good_stacks(n=2):
    return np.random.default_rng(0).random((n, SIZE, SIZE, 3), dtype=np.float32)


def exam_members(workspace, patient):
    folder = exam_dir(workspace, patient)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def bad_requests(workspace):
    """(name, body, content type, expected message fragment) for every kind of bad input."""
    patient = external_patients(workspace)[0]
    box = dict(zip(BOX_FIELDS, box_of(workspace, patient), strict=True))
    members = exam_members(workspace, patient)
    headers = next(iter(discover(exam_dir(workspace, patient)).files_by_patient.values()))
    first_three = {h.path.relative_to(exam_dir(workspace, patient)).as_posix()
                   for phase in order_phases(headers).phases[:3] for h in phase}
    no_post3 = {name: data for name, data in members.items() if name in first_three}  # pre, post1, post2
    good = good_stacks()
    nan = good.copy()
    nan[0, 0, 0, 0] = np.nan

    def exam(zip_text, **overrides):
        return {"dataframe_records": [{"dicom_zip": zip_text, **box, **overrides}]}

    def tensors(text):
        return {"dataframe_records": [{"tensors": text}]}

    mb = 1024 * 1024
    return [
        ("malformed JSON", '{"dataframe_records": [{"tensors": ', "application/json", "valid JSON"),
        ("neither input", {"dataframe_records": [box]}, "application/json", "give either"),
        ("box of wrong type", exam(zip_b64(members), row_start="ten"), "application/json", "row_start"),
        ("box missing", {"dataframe_records": [{"dicom_zip": zip_b64(members)}]}, "application/json",
         "needs its tumour box"),
        ("box outside the volume", exam(zip_b64(members), slice_start=500, slice_end=510), "application/json",
         "outside the volume"),
        ("box partly outside the volume", exam(zip_b64(members), row_end=box["row_end"] + 500), "application/json",
         "box exceeds the volume along row"),
        ("fractional box", exam(zip_b64(members), row_start=box["row_start"] + 0.5), "application/json",
         "box column row_start must be an integer, got"),
        ("boolean box", exam(zip_b64(members), row_start=True), "application/json",
         "box column row_start must be an integer, got true"),
        ("misspelt column", {"dataframe_records": [{"dicom_zp": zip_b64(members), **box}]}, "application/json",
         "give either dicom_zip"),
        ("malformed JSON holding an exam", '{"dataframe_records": [{"dicom_zip": "' + zip_b64(members) + '", ',
         "application/json", "valid JSON"),
        ("body over the limit", os.urandom(50 * mb), "application/json", "over the limit of"),
        ("wrong shape", tensors(tensors_b64(**{p: good[:, :20] for p in PHASES})), "application/json",
         f"has shape (2, 20, {SIZE}, 3)"),
        ("wrong dtype", tensors(tensors_b64(**{PHASES[0]: (good * 255).astype(np.uint8), PHASES[-1]: good})),
         "application/json", "has dtype uint8"),
        ("NaN", tensors(tensors_b64(**{PHASES[0]: nan, PHASES[-1]: good})), "application/json", "NaN"),
        ("missing tensor phase", tensors(tensors_b64(**{p: good for p in PHASES if p not in LATE})),
         "application/json", f"lack phase(s) {LATE}"),
        ("missing exam phase", exam(zip_b64(no_post3)), "application/json", f"missing {LATE}"),
        ("not base64", tensors("@@@@"), "application/json", "not valid base64"),
        ("not a zip", exam(base64.b64encode(b"plain text").decode()), "application/json", "not a zip archive"),
        ("non-DICOM file in the zip", exam(zip_b64({**members, "notes/readme.txt": b"hello"})),
         "application/json", "'notes/readme.txt': not a DICOM file"),
        ("path traversal", exam(zip_b64({**members, "../../etc/evil.dcm": next(iter(members.values()))})),
         "application/json", "climbs out of the archive"),
        ("absolute path", exam(zip_b64({"/tmp/evil.dcm": b"x"})), "application/json", "absolute path"),
        ("zip bomb (ratio)", exam(zip_b64({"bomb.dcm": bytes(10 * mb)})), "application/json", "zip bomb"),
        ("zip bomb (size)", exam(zip_b64({f"bomb{k}.dcm": bytes(20 * mb) for k in range(4)})), "application/json",
         "over the limit of 64 MB"),
        # a field over serve.max_payload_mb (16 MB decoded) in a body under the server's limit (4/3 of it + 1 MB)
        ("oversized payload", tensors("A" * (22 * mb)), "application/json", "over the limit of 16 MB"),
    ]


def sr_numbers(sr) -> dict[str, float]:
    """NUM content items of an SR, by concept code value, at any depth."""
    found, stack = {}, list(sr.ContentSequence)
    while stack:
        item = stack.pop()
        stack += list(getattr(item, "ContentSequence", []))
        if item.ValueType == "NUM":
            found[item.ConceptNameCodeSequence[0].CodeValue] = float(item.MeasuredValueSequence[0].NumericValue)
    return found


def test_a_pacs_study_is_answered_with_a_dicom_sr_filed_under_it(workspace, server, orthanc, client, tmp_path):
    """Pulled from Orthanc, sent pseudonymised, answered; the SR goes back into the study with the patient's
    identity copied by the client from the source study."""
    import mlflow

    from her2pcr.pacs.dicomweb import client as dicomweb_client
    from her2pcr.pacs.sr import PCR_PROBABILITY
    from tests.conftest import dciodvfy_errors

    patient = external_patients(workspace)[0]
    folder = exam_dir(workspace, patient)
    source = pydicom.dcmread(next(folder.rglob("*.dcm")), stop_before_pixels=True)
    box = box_of(workspace, patient)
    sr_file = tmp_path / "sr.dcm"
    result = her2pcr(["predict", "--pacs", orthanc["url"], "--study", source.StudyInstanceUID, "--box",
                      *map(str, box), "--box-base", "0", "--url", server["url"], "--sr-file", str(sr_file)], workspace)
    answer = json.loads(result.stdout)
    mlflow.set_tracking_uri(f"sqlite:///{workspace / 'mlflow.db'}")
    in_process = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    expected = float(in_process.predict(pd.DataFrame([exam_record(folder, box)]))["probability"].iloc[0])
    assert answer["probability"] == pytest.approx(expected, abs=1e-9)
    pacs = dicomweb_client(orthanc["url"])
    listed = pacs.search_for_series(source.StudyInstanceUID, search_filters={"Modality": "SR"})
    assert len(listed) == 1
    stored = pacs.retrieve_series(source.StudyInstanceUID, listed[0]["0020000E"]["Value"][0])
    assert len(stored) == 1
    sr = stored[0]
    assert sr.SOPInstanceUID == pydicom.dcmread(sr_file).SOPInstanceUID
    assert sr_numbers(sr)[PCR_PROBABILITY.value] == pytest.approx(expected, abs=1e-9)
    assert (sr.PatientName, sr.PatientID, sr.PatientBirthDate, sr.AccessionNumber) == (
        source.PatientName, source.PatientID, source.PatientBirthDate, source.AccessionNumber)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert f"registry models:/{MODEL}/{champion.version}" in sr_file.read_bytes().decode("latin-1")
    referenced = {s.SeriesInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
                  for s in study.ReferencedSeriesSequence}
    source_series = {pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID for p in folder.rglob("*.dcm")}
    assert referenced <= source_series and len(referenced) == len({"pre"} | {p.replace("sub", "post")
                                                                             for p in PHASES})
    assert dciodvfy_errors(sr_file) == []


def _echoes(request, answer: str, window: int = 24) -> bool:
    """Does the answer hold any run of ``window`` characters of a base64 field of the request?"""
    text = request.decode("latin-1") if isinstance(request, bytes) else request
    fields = [f for f in re.findall(r'"(?:dicom_zip|dicom_zp|tensors)": "([^"]*)', text) if len(f) >= window]
    return any(f[i:i + window] in answer for f in fields for i in range(0, len(f) - window, window))


def test_every_bad_input_gets_a_400_with_a_clear_message_and_the_server_keeps_serving(workspace, server):
    failures = []
    for name, body, content_type, fragment in bad_requests(workspace):
        response = invoke(server, body, content_type)
        if response.status_code // 100 != 4 or fragment not in response.text:
            failures.append(f"{name}: HTTP {response.status_code}: {response.text[:400]}")
        sent = body if isinstance(body, str | bytes) else json.dumps(body)
        if len(response.content) > 600 or "stack_trace" in response.text or _echoes(sent, response.text):
            failures.append(f"{name}: the answer ({len(response.content)} bytes) echoes the request or a traceback")
        assert requests.get(f"{server['url']}/ping", timeout=5).status_code == 200, name
    assert not failures, "\n".join(failures)
    good = invoke(server, {"dataframe_records": [tensors_record({p: good_stacks() for p in PHASES})]})
    assert good.status_code == 200


def test_no_identifying_dicom_value_in_responses_or_server_log(workspace, server):
    """The client pseudonymises every exam it sends: neither identity nor the exam's own UIDs reach the server."""
    patients = external_patients(workspace)[:2]  # the first is also the PACS test's study
    for patient in patients:  # make sure the exams went through, whatever ran before
        invoke(server, {"dataframe_records": [exam_record(exam_dir(workspace, patient), box_of(workspace, patient))]})
    secrets = set()
    for patient in patients:
        for path in exam_dir(workspace, patient).rglob("*.dcm"):
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            secrets |= {str(ds.PatientName), str(ds.PatientName).split("^")[0], ds.PatientBirthDate,
                        ds.PatientID, ds.AccessionNumber, ds.StudyInstanceUID, ds.SeriesInstanceUID}
            break
    secrets.discard("")
    texts = server["responses"] + [server["log"].read_text()]
    leaks = [s for s in secrets for text in texts if s in text]
    assert not leaks


def test_mlflow_serves_the_version_from_a_fresh_environment_of_its_own(workspace, promoted, tmp_path):
    """`mlflow models serve --env-manager uv`, not `local`: MLflow builds a new environment from the version's
    requirements (offline, from the uv cache `make` fills when it installs) and serves the code the version
    carries; nothing of this checkout's environment is imported there."""
    import mlflow

    patient = external_patients(workspace)[0]
    with np.load(workspace / "data" / "processed" / f"{patient}.npz") as stacks:
        record = tensors_record({p: stacks[p].astype(np.float32) for p in PHASES})
    mlflow.set_tracking_uri(f"sqlite:///{workspace / 'mlflow.db'}")
    in_process = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").predict(pd.DataFrame([record])).iloc[0]
    log_path = tmp_path / "serve-uv.log"
    env = {"UV_OFFLINE": "1", "MLFLOW_ENV_ROOT": str(tmp_path / "envs"),
           "PYTHONPATH": ""}  # the fresh environment must not see this checkout's src/
    with open(log_path, "w") as log, local_server(f"models:/{MODEL}@champion", f"sqlite:///{workspace / 'mlflow.db'}",
                                                   workspace, log=log, env_manager="uv", extra_env=env) as url:
        response = requests.post(f"{url}/invocations", json={"dataframe_records": [record]}, timeout=300)
    text = log_path.read_text()
    assert response.status_code == 200, response.text + text[-3000:]
    assert "Installing dependencies" in text or "uv pip install" in text, text[-3000:]
    served = response.json()["predictions"][0]
    assert served["probability"] == pytest.approx(in_process["probability"], abs=1e-9)
    assert served["members"] == in_process["members"]
    environments = list((tmp_path / "envs").rglob("site-packages/tensorflow"))
    assert environments, "no environment was built"
    assert not list((tmp_path / "envs").rglob("site-packages/her2pcr")), "her2pcr must travel in the model, not "\
                                                                          "be installed"
