"""One module per DVC stage: read params, open inputs, call `pipeline`, write outputs."""
