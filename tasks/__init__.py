"""Datasets, non-IID partitions and Keras models for tff_kd experiments."""

from tasks.models import MODEL_NAMES
from tasks.task import canonical_task_name
from tasks.task import create_task
from tasks.task import FEDERATED_TASKS
from tasks.task import from_arrays
from tasks.task import from_client_data
from tasks.task import has_natural_clients
from tasks.task import KerasBuilder
from tasks.task import model_fn_from_keras
from tasks.task import NPZ_PREFIX
from tasks.task import OUR_TASKS
from tasks.task import Task
from tasks.task import TASK_ALIASES
from tasks.task import TASK_NAMES
