"""Vocabulary of FedFACT, post- and in-processing (the counts: :data:`.common.COUNTS`)."""

# Shared arrays of the dual stage, beside the model's (their prefix tells them apart from it).
PREFIX = "fedfact."
LAMBDA = PREFIX + "lambda"  # global duals λ, float64 [2, U]
POOLED = PREFIX + "pooled_counts"  # N[a, y] summed over every client, int64 [groups, classes]

# Post-processing train reply: ∇_λ of the client's smoothed objective [2, U] (variants with
# global constraints), and the objective's value as a metric.
GRAD_LAMBDA = "grad_lambda"
DUAL_OBJECTIVE = "dual-objective"

# In-processing train reply, beside the model: the client's share g_k of the global
# disparities [U].
DISPARITY_GLOBAL = "disparity_global"
