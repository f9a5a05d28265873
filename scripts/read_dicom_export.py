"""Read sonosam's exported DICOM Segmentation and Measurement Report with highdicom — an
independent reader — and print what it found as JSON (crates/sonosam-cli/tests/cli.rs compares
it with sonosam's own report).

usage: read_dicom_export.py SEG.dcm SR.dcm
"""
import json
import sys

import highdicom as hd
import numpy as np


def runs(mask):
    """Row-major run lengths of a 0/1 array, starting with a (possibly empty) background run."""
    flat = mask.astype(np.uint8).ravel()
    counts, current, run = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(run)
            current, run = v, 0
        run += 1
    counts.append(run)
    return counts


def segmentation(path):
    seg = hd.seg.segread(path)
    segments = []
    for number in seg.segment_numbers:
        desc = seg.get_segment_description(number)
        # The pixels of this segment on the source frame (or the SEG's own frame when the
        # image was not DICOM).
        frame = seg.get_source_image_uids()
        if frame:
            study, series, sop = frame[0]
            mask = seg.get_pixels_by_source_instance([sop], segment_numbers=[number], combine_segments=False)[0, :, :, 0]
        else:
            mask = seg.pixel_array[number - 1] if seg.pixel_array.ndim == 3 else seg.pixel_array
        segments.append({
            "number": int(number),
            "label": desc.segment_label,
            "property_type": desc.segmented_property_type.value,
            "algorithm_type": desc.algorithm_type.value,
            "area": int(mask.sum()),
            "runs": runs(mask),
        })
    return {
        "sop_class": seg.SOPClassUID,
        "study": seg.StudyInstanceUID,
        "patient_name": str(seg.PatientName),
        "patient_identity_removed": seg.get("PatientIdentityRemoved"),
        "rows": int(seg.Rows),
        "columns": int(seg.Columns),
        "segmentation_type": seg.segmentation_type.value,
        "source_instances": [s[2] for s in seg.get_source_image_uids()],
        "segments": segments,
    }


def measurement_report(path):
    sr = hd.sr.srread(path)
    report = hd.sr.MeasurementReport.from_sequence([sr], is_root=True)
    groups = []
    planar = report.get_planar_roi_measurement_groups()
    image = report.get_image_measurement_groups()
    for kind, found in (("planar_roi", planar), ("image", image)):
        for g in found:
            measurements = [
                {
                    "code": m.name.value,
                    "scheme": m.name.scheme_designator,
                    "meaning": m.name.meaning,
                    "value": float(m.value),
                    "unit": m.unit.value,
                }
                for m in g.get_measurements()
            ]
            evaluations = [
                {"concept": e.name.value, "value": e.value.value, "scheme": e.value.scheme_designator}
                for e in g.get_qualitative_evaluations()
            ]
            entry = {
                "kind": kind,
                "tracking_identifier": g.tracking_identifier,
                "finding": g.finding_type.value if g.finding_type is not None else None,
                "measurements": measurements,
                "evaluations": evaluations,
            }
            if kind == "planar_roi":
                region = g.roi
                entry["region_points"] = int(len(region.value)) if region is not None else 0
                entry["region_source"] = region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID if region is not None else None
            groups.append(entry)
    return {
        "sop_class": sr.SOPClassUID,
        "study": sr.StudyInstanceUID,
        "patient_name": str(sr.PatientName),
        "patient_identity_removed": sr.get("PatientIdentityRemoved"),
        "template": sr.ContentTemplateSequence[0].TemplateIdentifier,
        "groups": groups,
    }


if __name__ == "__main__":
    seg_path, sr_path = sys.argv[1], sys.argv[2]
    print(json.dumps({"seg": segmentation(seg_path), "sr": measurement_report(sr_path)}))
