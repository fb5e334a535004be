"""Meta-learning: the inner loop that adapts a model to one user, the outer learner
(MAML, first-order MAML, Reptile, Meta-SGD) and the trainer that drives it."""
