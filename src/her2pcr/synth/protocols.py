"""Draw one exam's acquisition protocol from its site's table (conf/sites.yaml)."""

from __future__ import annotations

import numpy as np

from her2pcr.synth.exam import Acquisition
from her2pcr.synth.sites import SiteProtocol

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def pert(rng: np.random.Generator, median: float, low: float, high: float, shape: float = 4.0) -> float:
    """Draw from a PERT distribution with the given mode and range.

    Table 4 gives median [range]; PERT is the usual choice when only those are
    known, and unlike a triangle it keeps most mass near the centre.
    """
    if high <= low:
        return float(low)
    alpha = 1 + shape * (median - low) / (high - low)
    beta = 1 + shape * (high - median) / (high - low)
    return float(low + (high - low) * rng.beta(alpha, beta))


def allocate_exactly(rng: np.random.Generator, n: int, shares: dict[str, float]) -> list[str]:
    """Assign n items to categories in the given proportions, exactly (largest remainder), shuffled.

    Used where the reference study gives counts (e.g. 5 of 28 D3 patients on
    DCT), so small cohorts reproduce them instead of drifting by chance.
    """
    total = sum(shares.values())
    quotas = {k: n * v / total for k, v in shares.items()}
    counts = {k: int(np.floor(q)) for k, q in quotas.items()}
    remainder = sorted(quotas, key=lambda k: (counts[k] - quotas[k], k))
    for key in remainder[: n - sum(counts.values())]:
        counts[key] += 1
    labels = [k for k in shares for _ in range(counts[k])]
    rng.shuffle(labels)
    return labels


def phase_times(rng: np.random.Generator, site: SiteProtocol, n_post: int) -> tuple[float, ...]:
    """Acquisition centre of each phase in seconds after injection (pre-contrast negative)."""
    spacing = pert(rng, *site.phase_spacing_s)
    first = pert(rng, *site.first_post_centre_s)
    posts = [first + k * spacing for k in range(n_post)]
    return (-max(spacing, 60.0), *posts)


def phase_duration(times: tuple[float, ...]) -> float:
    """Acquisition time of one phase: dynamics run back to back, so one phase lasts the spacing
    between phases (Table 4: post-contrast scan time / number of phases ~ the spacing)."""
    if len(times) < 3:
        return 60.0
    return float(max(times[2] - times[1], 30.0))


def draw_acquisition(
    rng: np.random.Generator, site_name: str, site: SiteProtocol, *,
    matrix: int, slices: int, field_3t: bool, timing_present: bool, study_date: str,
) -> Acquisition:
    """One exam's protocol: every continuous value drawn within the site's range."""
    post_counts = list(site.post_phases)
    probs = np.array([site.post_phases[k] for k in post_counts], dtype=float)
    n_post = int(rng.choice(post_counts, p=probs / probs.sum()))
    spacing = round(pert(rng, *site.pixel_spacing_mm), 4)
    thickness = round(pert(rng, *site.slice_thickness_mm), 3)
    # Centre the field of view on the scanner isocentre, offset a little as a
    # technologist would place it; the breast is imaged feet-to-head.
    half_fov = spacing * matrix / 2
    origin = (
        round(-half_fov + rng.uniform(-20, 20), 3),
        round(-half_fov + rng.uniform(-30, 10), 3),
        round(-thickness * slices / 2 + rng.uniform(-15, 15), 3),
    )
    times = tuple(round(t, 2) for t in phase_times(rng, site, n_post))
    return Acquisition(
        site=site_name,
        manufacturer=site.manufacturer,
        model_name=site.model_name,
        field_strength_t=3.0 if field_3t else 1.5,
        pixel_spacing_mm=spacing,
        slice_thickness_mm=thickness,
        repetition_time_ms=round(pert(rng, *site.repetition_time_ms), 3),
        echo_time_ms=round(pert(rng, *site.echo_time_ms), 3),
        flip_angle_deg=round(pert(rng, *site.flip_angle_deg), 1),
        phase_encoding_steps=int(round(pert(rng, *site.phase_encoding_steps))),
        percent_sampling=round(pert(rng, *site.percent_sampling), 1),
        bolus_volume_ml=round(pert(rng, *site.bolus_volume_ml), 1),
        contrast_agent=site.contrast_agent,
        n_post=n_post,
        phase_times_s=times,
        matrix=matrix,
        slices=slices,
        origin_mm=origin,
        direction=AXIAL,
        layout=site.layout,
        folder_layout=site.folder_layout,
        timing_tag=site.timing_tag if timing_present else None,
        study_date=study_date,
        study_time_s=float(rng.integers(7 * 3600, 18 * 3600)),
        phase_duration_s=phase_duration(times),
    )
