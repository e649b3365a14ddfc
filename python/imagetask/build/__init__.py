"""Building output rows: a batch's prompts sent to the model and its answers turned into
dict rows (`_batch`) or Arrow tables (`_columnar`), named and typed by one `OutputSchema`
(`_schema`), converted between the two (`_converter`), images kept as files (`_artifacts`);
input images read from the forms users hold them in (`_input_images`). A batch is given
the model, `n` and the schema, and the task's hooks as functions: this package imports
nothing of `imagetask.task`.
"""
