"""A small analysis for the Pipes benchmark: writes one file, returns one number."""

import json


def run(task, params, ctx):
    n = len(task.file_location or [])
    (ctx.results_dir / "out.json").write_text(json.dumps({"n": n, "x": params.x}))
    return {"n_files": n}
