"""Aggregation factories (`tff.aggregators`) of tff_kd."""

from tff_kd.aggregators.weighted_mean import WeightedMeanFactory
