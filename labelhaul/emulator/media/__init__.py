"""Synthetic rows of the media kinds other than images, one module per kind.

`labelhaul.emulator.synthetic.build_row` builds every row image-shaped first (ids, details,
metadata, project envelope), then, for a row whose `SyntheticSpec.media_of(row)` is not
"image", calls `labelhaul.emulator.media.<kind>.build(spec, row, base)`, which returns the
row of its kind: its own `data_row.row_data`, `media_attributes` and label `annotations`, in
the shapes Labelbox exports for that media type. Like images, everything is a pure function
of (spec, row).

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""
