"""Memory planning: will a search or training job fit before it runs.

The job's steps are traced on ``meta`` tensors (nothing allocated or computed) under a dispatch mode
that counts every storage while it lives (:mod:`.tracer`), phase by phase, through the search engine's
and the trainer's own step functions (:mod:`.search_step`, :mod:`.training_step`); a device model
turns tensor bytes into device memory (:mod:`.simulation`). ``nasseg plan`` prints the result;
``nasseg search`` / ``nasseg train`` refuse a job predicted not to fit (:func:`refusal`).
Measured accuracy: docs/planning.md.
"""

from .budget import MemoryPlan, Phase, format_bytes
from .fit import Available, FitReport, available_memory, fit_report, largest_batch, plan_job, refusal, way_out
from .search_step import plan_search
from .simulation import DEVICE_MODELS, DeviceModel, device_model
from .tracer import MemoryTracer
from .training_step import plan_training

__all__ = ["Available", "DEVICE_MODELS", "DeviceModel", "FitReport", "MemoryPlan", "MemoryTracer", "Phase",
           "available_memory", "device_model", "fit_report", "format_bytes", "largest_batch", "plan_job",
           "plan_search", "plan_training", "refusal", "way_out"]
