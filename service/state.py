"""Everything the routes share, built in the app's lifespan and kept on ``app.state.service``.

No module-level singletons: two apps in one process (tests do this) have two states.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from autofocus.calibration import FocusCalibration
from autofocus.hardware import Hardware, open_hardware
from autofocus.predictor import Predictor
from drivers.errors import ConfigurationError
from service.errors import BadRequestError
from service.hardware import FrameSource, TappedCamera
from service.jobs import DeviceLock, Job, JobManager
from service.metrics import Metrics
from service.runs_db import RunsDB
from service.settings import Settings

__all__ = ["ServiceState", "finite", "open_state"]

log = logging.getLogger(__name__)


def finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (JSON has no NaN), recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


@dataclass
class ServiceState:
    """Opened hardware, the model, jobs, the runs database, metrics and the API key."""

    settings: Settings
    api_key: str
    hardware: Hardware
    camera: TappedCamera
    frames: FrameSource
    predictor: Predictor
    device_lock: DeviceLock
    jobs: JobManager
    runs: RunsDB
    metrics: Metrics
    started_monotonic_s: float = field(default_factory=time.monotonic)
    shutting_down: threading.Event = field(default_factory=threading.Event)
    focus_lock_job_id: str | None = None
    calibration: FocusCalibration | None = None  # from settings.calibration_file
    calibration_lock: threading.Lock = field(default_factory=threading.Lock)  # the file and the attribute together
    last_prediction: dict[str, Any] | None = None
    last_device_error: str | None = None
    _streams: int = 0
    _streams_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def simulator(self) -> Any | None:
        return self.hardware.simulator

    def stream_slot(self) -> bool:
        """Reserve one MJPEG stream slot; ``False`` when ``stream_max_clients`` are running."""
        with self._streams_lock:
            if self._streams >= self.settings.stream_max_clients:
                return False
            self._streams += 1
            return True

    def release_stream_slot(self) -> None:
        with self._streams_lock:
            self._streams -= 1

    @property
    def streams(self) -> int:
        return self._streams

    def model_info(self) -> dict[str, Any]:
        meta = self.predictor.meta
        return finite(
            {
                "source": self.predictor.source,
                "near_model": (
                    {"source": self.predictor.near.source, "window_um": list(self.predictor.near.window_um)}
                    if self.predictor.near is not None
                    else None
                ),
                "far_model": (
                    {"source": self.predictor.far.source, "beyond_um": self.predictor.far.beyond_um}
                    if self.predictor.far is not None
                    else None
                ),
                "runtime": self.predictor.runtime,
                "aggregate": self.predictor.aggregate,
                "patch_size": self.predictor.patch_size,
                "objective": meta.get("objective"),
                "z_range_um": meta.get("z_range_um"),
                "version": meta.get("version"),
                "status": meta.get("status"),
                "metrics": meta.get("metrics"),
            }
        )

    def calibration_for(self, use_calibration: bool, focus_offset_um: float) -> FocusCalibration | None:
        """The calibration a run uses: the stored one unless the request opts out (422 if it also sets an offset)."""
        if not use_calibration or self.calibration is None:
            return None
        if focus_offset_um != 0.0:
            raise BadRequestError(
                f"options.focus_offset_um={focus_offset_um:+.3f} cannot be combined with the service's calibration, "
                f"which already holds the focus (the model reads {self.calibration.reading_at_focus_um:+.3f} um "
                "there): send focus_offset_um 0, or use_calibration false"
            )
        return self.calibration

    def simulated_truth(self) -> dict[str, float] | None:
        """The simulator's true defocus at the frame centre (``None`` on real hardware)."""
        scope = self.simulator
        if scope is None:
            return None
        return {"defocus_um": float(scope.true_defocus_um()), "time_s": float(scope.time_s)}

    def job_done(self, job: Job) -> None:
        """Count a finished job; remember a device fault for /status."""
        self.metrics.inc("autofocus_jobs_total", [("kind", job.kind), ("status", job.status)])
        if job.error is not None and job.error.get("status") == 503:
            self.last_device_error = str(job.error.get("detail"))

    def close(self) -> None:
        """Cancel jobs, then stop the stage and close the devices."""
        self.shutting_down.set()
        self.jobs.shutdown(timeout_s=10.0)
        self.hardware.close()


def load_calibration(settings: Settings) -> FocusCalibration | None:
    """``settings.calibration_file`` loaded; None if absent (``ConfigurationError`` if unreadable)."""
    path = settings.calibration_file
    if not path.exists():
        return None
    try:
        return FocusCalibration.load(path)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"calibration_file: {exc}; fix or delete the file, or point calibration_file elsewhere"
        ) from exc


def open_state(settings: Settings, api_key: str, metrics: Metrics) -> ServiceState:
    """Open the runs database, load the model and open the hardware (in that order).

    Errors propagate so that start-up fails loudly; anything opened before a failure is closed.
    """
    runs = RunsDB(settings.runs_db)
    calibration = load_calibration(settings)
    settings.data_root.mkdir(parents=True, exist_ok=True)
    predictor = Predictor.from_checkpoint(
        settings.model_path,
        runtime=settings.runtime,
        threads=settings.predictor_threads,
        aggregate=settings.predictor_aggregate,
        max_tiles=settings.predictor_max_tiles,
        near_model=settings.near_model,
        far_model=settings.far_model,
    )
    if calibration is not None and calibration.source and calibration.source != predictor.description:
        log.warning(
            "calibration_file %s was measured with %s, the service runs %s: calibrate again",
            settings.calibration_file,
            calibration.source,
            predictor.description,
        )
    hardware = open_hardware(settings.hardware_config())
    try:
        device_lock = DeviceLock()
        camera = TappedCamera(hardware.camera)
        jobs = JobManager(device_lock, settings.job_history, settings.device_lock_timeout_s)
        state = ServiceState(
            settings=settings,
            api_key=api_key,
            hardware=hardware,
            camera=camera,
            frames=FrameSource(camera, device_lock),
            predictor=predictor,
            device_lock=device_lock,
            jobs=jobs,
            runs=runs,
            metrics=metrics,
            calibration=calibration,
        )
        jobs.on_job_done = state.job_done
    except BaseException:
        hardware.close()
        raise
    log.info("hardware open: %s", hardware.describe())
    return state
