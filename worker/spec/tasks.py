"""The names of the Celery tasks: the web sends work by these names with nothing but a row's
id, and the worker's tasks (``worker/tasks``) are registered under them."""

TRAIN_JOB = "tunelab.train_job"
EVALUATE_MODELS = "tunelab.evaluate_models"
ANSWER_REVIEW_ITEMS = "tunelab.answer_review_items"
MAKE_EXPORT = "tunelab.make_export"
SERVE_DEPLOYMENT = "tunelab.serve_deployment"
