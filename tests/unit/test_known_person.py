"""The known-person experiment's group weights recover the weights that generated the outcomes."""

from __future__ import annotations

import numpy as np

from migrainemamba.experiments.known_person import group_weights
from migrainemamba.models.bayes_logistic import sigmoid


def test_group_weights_recover_each_groups_response_to_the_effect():
    rng = np.random.default_rng(3)
    n = 200_000
    logit = rng.normal(-2.2, 0.5, n)
    effect = np.where(rng.random(n) < 0.2, rng.uniform(0.3, 1.5, n), 0.0)
    member = rng.random(n) < 0.6
    true = np.where(member, 0.2, -0.9)  # members respond more than the population, the others hardly
    y = (rng.random(n) < sigmoid(logit + true * effect)).astype(float)
    w_member, w_other = group_weights(logit, effect, member, y)
    assert abs(w_member - 0.2) < 0.08 and abs(w_other - (-0.9)) < 0.1
    # with no difference between the groups, both weights are about 0
    y0 = (rng.random(n) < sigmoid(logit)).astype(float)
    assert np.all(np.abs(group_weights(logit, effect, member, y0)) < 0.1)
