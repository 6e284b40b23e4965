"""OpenAI's fine-tuning API over tunelab's own services: ``files`` (a file is checked by
``file_format``, kept as sent and staged as an upload), ``jobs`` (a request becomes a tunelab
job; a job reads back as OpenAI's job object, events, checkpoints and results file),
``serving`` (``ft:`` model names, answered by deployments), ``names`` (the ids and names) and
``errors`` (OpenAI's error object)."""
