"""The machinery of `neuralde.study`: problems, models, training, the side
experiments and the report. Private: the public entry is `neuralde.study`."""
