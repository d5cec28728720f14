"""What a served answer's DICOM SR content refers to: the source series of the phases the model read, and the box.

The answer carries only UIDs of the request's own files (a PACS client sends pseudonymised ones and maps them back)
and no patient or study attribute: the client builds the SR and fills those from the source study itself.
"""

from __future__ import annotations

from her2pcr.dicom.phases import PhaseOrder
from her2pcr.preprocess.settings import Box, phase_names


def source_phases(inputs: list[str]) -> list[str]:
    """The acquired phases behind model inputs, in acquisition order: ``subK`` is ``postK - pre``."""
    needed = set()
    for name in inputs:
        needed |= {"pre", name.replace("sub", "post")} if name.startswith("sub") else {name}
    return sorted(needed, key=lambda p: -1 if p == "pre" else int(p.removeprefix("post")))


def sr_references(order: PhaseOrder, box: tuple[int, ...], inputs: list[str]) -> dict:
    """The study, the series and instances of each phase used, and the box's slices on the pre-contrast phase.

    A slice is ``[SOPClassUID, SOPInstanceUID, frame]`` (frame 1-based for a multi-frame file, else null), in the
    exam's slice order along the normal, so the box's slice ``k`` is the pre-contrast phase's slice ``k``.
    """
    names = phase_names(len(order.phases))
    wanted = source_phases(inputs)
    phases = []
    for name, files in zip(names, order.phases, strict=True):
        if name in wanted:
            phases.append({"phase": name, "series_instance_uid": files[0].series_instance_uid,
                           "slices": [[h.sop_class_uid, h.sop_instance_uid, None if h.frame is None else h.frame + 1]
                                      for h in files]})
    limits = Box(*box)
    pre = order.phases[0]
    return {"study_instance_uid": pre[0].study_instance_uid, "inputs": list(inputs), "phases": phases,
            "box": {**limits._asdict(), "index_base": 0, "reference_phase": "pre",
                    "rows": pre[0].rows, "columns": pre[0].columns}}
