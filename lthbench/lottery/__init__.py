"""One step of an IMP chain: prune the parent's weights, reset the survivors, train, and record the result."""
