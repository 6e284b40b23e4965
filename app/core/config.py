"""The one settings class, read from ``TUNELAB_*`` variables by the web app, the worker and the CLI.

With no variables set at all tunelab runs in embedded mode: SQLite and an embedded broker in a
data folder, artifacts on local disk.
"""

from __future__ import annotations

import shutil
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# The repository, when running from a checkout (tests and tools only). Code that runs installed
# finds its templates, static files and migrations through app.core.paths.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEV_SECRET = "tunelab-development-secret-change-me"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNELAB_", env_file=None, extra="ignore")

    env: Literal["development", "production"] = "development"
    data_dir: Path = Field(default_factory=lambda: Path.home() / ".tunelab")
    database_url: str | None = None
    broker_url: str | None = None
    secret_key: SecretStr = SecretStr(DEV_SECRET)

    host: str = "127.0.0.1"
    port: int = 8000

    # Threads of the web server that run routes' database and file work (the event loop never
    # does), the database pool kept open, and how long a request waits for a connection
    # before it is answered 503 with Retry-After.
    web_threads: int = 40
    # How long an idle kept-alive connection stays open. Longer than what a client or proxy
    # in front keeps one idle (nginx 75 s, most load balancers 60 s): a server that closes
    # first races the client's next request on that connection, which then fails. uvicorn's
    # own 5 s lost a few requests of a busy client in the load bench.
    keep_alive_seconds: int = Field(default=90, ge=1, le=3600)
    db_pool_size: int = 5
    db_pool_timeout: float = 30.0
    # How long an API token found valid is taken as such without asking the database again
    # (app.services.accounts.token_cache); a revocation in another process takes effect within
    # it. 0: every request asks the database.
    token_cache_seconds: float = Field(default=5.0, ge=0, le=60)
    # Raise (instead of logging) when database work runs on the event loop; the tests set it.
    strict_event_loop: bool = False

    upload_max_bytes: int = 2 * 1024**3
    # Default per-user storage for uploaded files; an admin can set a user's own quota.
    user_quota_bytes: int = 10 * 1024**3
    # Seconds between worker heartbeats, and how stale a heartbeat may get before the reaper
    # hands the job to another worker.
    heartbeat_seconds: float = 5.0
    lease_seconds: float = 120.0
    # A row that has waited this long since its message was sent, next to an idle worker of
    # its queue, is sent again (the broker lost it, or was down when the row was made).
    reoffer_seconds: float = 30.0
    # Queue that training jobs go to; cluster workers listen on their own (e.g. gpu-80g).
    default_queue: str = "training"
    # Each succeeded job queues an evaluation of itself against its prompting baseline on (at
    # most this many examples of) its test split; a job created with evaluate=false does not.
    auto_eval_max_samples: int = 200
    # How evaluations generate answers: "vllm" (when installed on the workers) for the
    # prompt-only models, transformers otherwise. vLLM and the transformers copy used for
    # likelihoods then share the GPU.
    eval_backend: Literal["transformers", "vllm"] = "transformers"
    # Where a worker's model server for a deployment listens, and the address the web process
    # reaches it at (a cluster worker sets both to its own reachable address).
    serve_host: str = "127.0.0.1"
    serve_advertise_host: str | None = None
    # A call to a fine-tuned model's OpenAI name (ft:…) that no running deployment serves:
    # deploy it and wait up to the timeout (seconds), instead of answering 409.
    auto_deploy: bool = False
    auto_deploy_timeout: float = 300.0
    # Where base models given by hub id come from; off-line installs set HF_HUB_OFFLINE too.
    allow_hub_downloads: bool = True
    # Converted and downloaded base models; can be shared between data folders.
    models_dir: Path | None = None
    # Folders under which users of the web app and the API may name local base models (model
    # folders and .gguf files): TUNELAB_MODEL_DIRS=/srv/models:/data/llm, absolute paths
    # separated by ":" as in PATH. A base model given as a path is accepted only when its real
    # path (symlinks resolved, ".." collapsed) lies inside one of these or the converted-model
    # cache (model_cache_dir). Unset: no local paths except that cache. Set it alike on the web
    # server and the workers. The local `tunelab train` CLI is not restricted by it.
    model_dirs: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    # Whether the workers have NVIDIA GPUs (QLoRA needs one, and the estimates assume one).
    # Unset: in embedded mode, whether this machine has an NVIDIA driver; in cluster mode, yes
    # (cluster workers run on CUDA hosts).
    worker_cuda: bool | None = None
    # Placement (worker.spec.placement): a job goes to the queue of the smallest capacity
    # class its estimate needs, which only workers able to run it consume. Unset: on in
    # cluster mode, off in embedded mode (one machine, one worker: every job on the default
    # queue as before).
    placement: bool | None = None
    # A job needing more than this (GB per GPU, GPUs) is refused at creation: no worker of this
    # installation could ever take it. Unset: only the largest class limits.
    max_gpu_memory_gb: float | None = None
    max_gpus: int | None = None
    # A worker not seen for this long (its upkeep refreshes it every few seconds) is offline.
    worker_offline_seconds: float = 60.0
    # What a worker advertises, when not detected: TUNELAB_WORKER_GPUS=2,
    # TUNELAB_WORKER_GPU_MEMORY_GB=80, TUNELAB_WORKER_GPU_NAME, TUNELAB_WORKER_4BIT=true; and
    # its name on the workers page (default: the host's name).
    worker_gpus: int | None = None
    worker_gpu_memory_gb: float | None = None
    worker_gpu_name: str | None = None
    worker_4bit: bool | None = None
    worker_name: str | None = None
    # Whether a worker adds the queues of its capacity classes to the ones it was started
    # with (`tunelab worker --queue X` turns it off: X alone).
    worker_class_queues: bool = True

    @field_validator("model_dirs", mode="before")
    @classmethod
    def _split_model_dirs(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(":") if part.strip()]
        return value

    @field_validator("model_dirs")
    @classmethod
    def _model_dirs_are_absolute(cls, value: list[Path]) -> list[Path]:
        relative = [str(path) for path in value if not path.is_absolute()]
        if relative:
            raise ValueError(
                f"TUNELAB_MODEL_DIRS takes absolute folders separated by ':'; not: {relative}"
            )
        return value

    @model_validator(mode="after")
    def _refuse_default_secret_in_production(self) -> Settings:
        if self.env == "production" and self.secret_key.get_secret_value() == DEV_SECRET:
            raise ValueError(
                "TUNELAB_SECRET_KEY must be set to a long random value when TUNELAB_ENV=production"
            )
        return self

    @property
    def workers_have_cuda(self) -> bool:
        if self.worker_cuda is not None:
            return self.worker_cuda
        if not self.embedded:
            return True
        # The web process must not import torch to ask; the driver's files tell the same.
        return (
            Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None
        )

    @property
    def places_jobs(self) -> bool:
        return self.placement if self.placement is not None else not self.embedded

    @property
    def embedded(self) -> bool:
        """True when no external database or broker is configured."""
        return self.database_url is None and self.broker_url is None

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'tunelab.db'}"

    @property
    def celery_broker_url(self) -> str:
        # kombu's SQLAlchemy transport on a SQLite file works across processes and keeps
        # messages while no worker runs, so embedded jobs survive a restart.
        return self.broker_url or f"sqla+sqlite:///{self.data_dir / 'broker.db'}"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def datasets_dir(self) -> Path:
        return self.data_dir / "datasets"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def model_cache_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    def ensure_dirs(self) -> None:
        for path in (
            self.data_dir,
            self.uploads_dir,
            self.datasets_dir,
            self.artifacts_dir,
            self.runs_dir,
            self.model_cache_dir,
        ):
            path.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
