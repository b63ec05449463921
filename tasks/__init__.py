"""Datasets, non-IID partitions and Keras models for tff_kd experiments."""

from tasks.models import MODEL_NAMES
from tasks.task import create_task
from tasks.task import KerasBuilder
from tasks.task import model_fn_from_keras
from tasks.task import Task
from tasks.task import TASK_NAMES
