"""example_python's `stats`: the mean and count of the run's `values` (standard library only)."""
import statistics


def main(context):
    values = context.params.get("values") or []
    if context.params.get("fail"):
        raise ValueError("asked to fail")
    context.log(f"{len(values)} values for run {context.run_id}")
    print("computing the mean")  # print output joins the task's log too
    return {"mean": statistics.fmean(values), "count": len(values)}
