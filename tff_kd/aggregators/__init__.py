"""Aggregation factories (`tff.aggregators`) of tff_kd."""

from tff_kd.aggregators.entropy_reduction import EntropyReductionFactory
from tff_kd.aggregators.logit_fusion import LogitFusionFactory
from tff_kd.aggregators.stack import StackFactory
from tff_kd.aggregators.weighted_mean import WeightedMeanFactory
