"""example_python's `report`: a summary of `stats`' result, read from the context."""


def main(context):
    stats = context.upstream["stats"]
    # JSON does not tell 2.0 from 2: the mean is a float whatever way it travelled.
    return {"summary": f"count={stats['count']} mean={float(stats['mean'])}"}
