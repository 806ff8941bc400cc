"""PPO math against values worked out by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from actorlearner.learner import ppo
from actorlearner.learner.batch import collate, fresh_mask, group_ids, split_stale
from actorlearner.trajectory import Trajectory


def t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_gae_skips_feedback_tokens():
    # columns: 0 prompt, 1 action, 2 action, 3 env feedback, 4 action
    mask = t([0, 1, 1, 0, 1])
    rewards = t([0, 0, 1, 0, 2])
    values = t([9, 0.5, 0.4, 7, 0.2])  # 9 and 7 sit on non-actions and must be ignored
    adv, ret = ppo.gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # col 4 (last action): delta = 2 + 0.9*0 - 0.2 = 1.8;               A = 1.8
    # col 2: delta = 1 + 0.9*0.2 - 0.4 = 0.78;  A = 0.78 + 0.72*1.8   = 2.076
    # col 1: delta = 0 + 0.9*0.4 - 0.5 = -0.14; A = -0.14 + 0.72*2.076 = 1.35472
    expected_adv = t([0, 1.35472, 2.076, 0, 1.8])
    torch.testing.assert_close(adv, expected_adv)
    # returns = A + V on actions: 1.85472, 2.476, 2.0
    torch.testing.assert_close(ret, t([0, 1.85472, 2.476, 0, 2.0]))


def test_gae_rows_are_independent_and_gamma_one_lambda_one_is_reward_to_go():
    mask = t([0, 1, 1, 1], [0, 0, 1, 1])
    rewards = t([0, 1, 0, 3], [0, 0, 5, 0])
    values = t([0, 0, 0, 0], [0, 0, 0, 0])
    adv, _ = ppo.gae(rewards, values, mask, gamma=1.0, lam=1.0)
    # with V = 0, gamma = lambda = 1 the advantage is the undiscounted reward-to-go
    torch.testing.assert_close(adv, t([0, 4, 3, 3], [0, 0, 5, 0]))


def test_masked_whiten_uses_only_masked_entries():
    x = t([1, 2, 3, 100])
    mask = t([1, 1, 1, 0])
    # mean 2, unbiased var ((1-2)^2 + 0 + (3-2)^2) / 2 = 1 -> [-1, 0, 1], masked entry -> 0
    torch.testing.assert_close(ppo.masked_whiten(x, mask, eps=0.0), t([-1, 0, 1, 0]))


def test_shaped_rewards_subtract_kl_on_actions():
    env = t([0, 0, 1])
    logp = t([-1, -2, -0.5])
    ref = t([-1.5, -2, -1])
    # kl = logp - ref = [0.5, 0, 0.5]; r = env - 0.1 * kl = [-0.05, 0, 0.95]
    rewards, kl = ppo.shaped_rewards(env, logp, ref, t([1, 1, 1]), kl_coef=0.1)
    torch.testing.assert_close(kl, t([0.5, 0, 0.5]))
    torch.testing.assert_close(rewards, t([-0.05, 0, 0.95]))
    # a non-action token pays no KL
    rewards, _ = ppo.shaped_rewards(env, logp, ref, t([0, 1, 1]), kl_coef=0.1)
    torch.testing.assert_close(rewards, t([0, 0, 0.95]))


def test_clipped_policy_loss():
    old = t([0, 0, 0])
    logp = torch.log(t([1.5, 0.5, 1.1]))  # ratios 1.5, 0.5, 1.1
    adv = t([1, -1, 2])
    mask = t([1, 1, 1])
    terms, clipped = ppo.policy_loss(logp, old, adv, mask, clip_ratio=0.2, normalizer=3)
    # tok 1: max(-1*1.5, -1*1.2) = -1.2 (clipped)
    # tok 2: max(+1*0.5, +1*0.8) = 0.8 (clipped)
    # tok 3: max(-2*1.1, -2*1.1) = -2.2
    # mean = (-1.2 + 0.8 - 2.2) / 3 = -0.8666...
    assert terms.loss.item() == pytest.approx(-2.6 / 3)
    assert clipped.item() == 2


def test_clipped_policy_loss_gradient_vanishes_when_clipped():
    logp = torch.log(t([1.5])).requires_grad_()
    terms, _ = ppo.policy_loss(logp, t([0]), t([1]), t([1]), 0.2, 1)
    terms.loss.backward()
    assert logp.grad.item() == 0.0  # ratio 1.5 > 1.2 with A > 0: no push further


def test_behaviour_weights_are_clipped_and_one_off_the_mask():
    proximal = torch.log(t([0.5, 0.2, 0.9]))
    behaviour = torch.log(t([0.25, 0.4, 0.1]))
    weights = ppo.behaviour_weights(proximal, behaviour, t([1, 1, 0]), cap=1.5)
    # 0.5/0.25 = 2 -> capped at 1.5; 0.2/0.4 = 0.5; masked -> 1
    torch.testing.assert_close(weights, t([1.5, 0.5, 1.0]))


def test_decoupled_policy_loss_and_gradient():
    logp = torch.log(t([0.6, 0.9, 0.3])).requires_grad_()
    proximal = torch.log(t([0.5, 0.6, 0.5]))
    behaviour = torch.log(t([0.25, 0.6, 1.0]))
    adv, mask = t([1, 2, -1]), t([1, 1, 1])
    terms, clipped = ppo.decoupled_policy_loss(
        logp, proximal, behaviour, adv, mask, clip_ratio=0.2, cap=1.5, normalizer=2
    )
    # tok 1: r = 0.6/0.5 = 1.2, max(-1.2, -1.2) = -1.2; w = min(0.5/0.25, 1.5) = 1.5 -> -1.8
    # tok 2: r = 1.5, max(-3.0, -2*1.2) = -2.4 (clipped); w = 1 -> -2.4
    # tok 3: r = 0.6, A = -1: max(0.6, 0.8) = 0.8 (clipped); w = 0.5/1 = 0.5 -> 0.4
    # (-1.8 - 2.4 + 0.4) / 2 = -1.9
    assert terms.loss.item() == pytest.approx(-1.9)
    assert terms.token_sum.item() == pytest.approx(-3.8)
    assert clipped.item() == 2
    terms.loss.backward()
    # d/dlogp of -w A r = -w A r on unclipped tokens (tok 1: -1.5 * 1 * 1.2), 0 when clipped
    torch.testing.assert_close(logp.grad, t([-1.8 / 2, 0, 0]))


def test_decoupled_loss_is_plain_ppo_when_behaviour_is_proximal():
    logp, old = torch.log(t([1.5, 0.5, 1.1])), t([0, 0, 0])
    adv, mask = t([1, -1, 2]), t([1, 1, 1])
    plain, _ = ppo.policy_loss(logp, old, adv, mask, 0.2, 3)
    decoupled, _ = ppo.decoupled_policy_loss(logp, old, old, adv, mask, 0.2, 2.0, 3)
    assert decoupled.loss.item() == pytest.approx(plain.loss.item())


def test_truncated_importance_sampling_loss_and_gradient():
    logp = torch.log(t([0.6, 0.2])).requires_grad_()
    behaviour = torch.log(t([0.3, 0.4]))
    adv, mask = t([1, -2]), t([1, 1])
    terms, truncated = ppo.tis_policy_loss(logp, behaviour, adv, mask, cap=1.5, normalizer=1)
    # tok 1: rho = 2 -> 1.5; -A * 1.5 = -1.5.   tok 2: rho = 0.5; -(-2) * 0.5 = 1.0
    assert terms.loss.item() == pytest.approx(-0.5)
    assert truncated.item() == 1
    terms.loss.backward()
    # the weight is held constant: d/dlogp = -A * min(rho, cap) (still pushes past the cap)
    torch.testing.assert_close(logp.grad, t([-1.5, 1.0]))


def test_clipped_value_loss():
    values = t([1.0, 0.0])
    old = t([0.5, 0.5])
    returns = t([2.0, 0.0])
    terms = ppo.value_loss(values, old, returns, t([1, 1]), value_clip=0.2, normalizer=2)
    # tok 1: V_clip = 0.5 + clamp(0.5) = 0.7; 0.5*max((1-2)^2, (0.7-2)^2) = 0.5*1.69 = 0.845
    # tok 2: V_clip = 0.5 - 0.2 = 0.3;        0.5*max(0^2, 0.3^2)        = 0.045
    assert terms.loss.item() == pytest.approx((0.845 + 0.045) / 2)


def test_rank_normalizer_sums_to_global_mean():
    # two ranks each divide by (global tokens / world): the average of their losses is the mean
    logp, old, adv = t([-0.1, -0.3, 0.2, 0.0]), t([0, 0, 0, 0]), t([1, -2, 0.5, 3])
    mask = t([1, 1, 0, 1])
    full, _ = ppo.policy_loss(logp, old, adv, mask, 0.2, mask.sum())
    halves = [
        ppo.policy_loss(logp[s], old[s], adv[s], mask[s], 0.2, mask.sum() / 2)[0].loss
        for s in (slice(0, 1), slice(1, 4))
    ]
    assert ((halves[0] + halves[1]) / 2).item() == pytest.approx(full.loss.item())


def test_entropy_of_uniform_is_log_v():
    assert ppo.entropy_from_logits(torch.zeros(2, 4)).tolist() == pytest.approx([math.log(4)] * 2)


def test_kl_controllers():
    fixed = ppo.make_kl_controller(0.1, None, 100)
    fixed.update(5.0, 10)
    assert fixed.value == 0.1
    adaptive = ppo.make_kl_controller(0.1, target=1.0, horizon=100)
    adaptive.update(2.0, 10)  # error clip(2/1 - 1) = 0.2 -> 0.1 * (1 + 0.2 * 10/100) = 0.102
    assert adaptive.value == pytest.approx(0.102)
    adaptive.load_state_dict({"value": 0.1})
    adaptive.update(0.9, 10)  # error -0.1 -> 0.1 * (1 - 0.1 * 0.1) = 0.099
    assert adaptive.value == pytest.approx(0.099)
    with pytest.raises(ValueError, match="kl_target"):
        ppo.make_kl_controller(0.1, target=0.0, horizon=100)


def test_group_advantages_use_the_other_samples_of_the_same_start():
    mask = t([0, 1, 1], [0, 1, 1], [0, 1, 1], [1, 1, 0], [0, 1, 1])
    rewards = t([0, 0, 3], [0, 0, 6], [0, 0, 9], [1, 2, 0], [0, 0, 5])
    adv, ret = ppo.group_advantages(rewards, mask, [0, 0, 0, 1, 1], gamma=0.5)
    # returns-to-go, discounted per action token: rows 0-2 -> [1.5, 3], [3, 6], [4.5, 9];
    # row 3 -> [1 + 0.5 * 2, 2] = [2, 2]; row 4 -> [2.5, 5]
    torch.testing.assert_close(ret, t([0, 1.5, 3], [0, 3, 6], [0, 4.5, 9], [2, 2, 0], [0, 2.5, 5]))
    # baselines: leave-one-out means of the episode returns of the same group
    # row 0: (3 + 4.5) / 2 = 3.75; row 1: 3; row 2: 2.25; row 3: 2.5; row 4: 2
    expected = t([0, -2.25, -0.75], [0, 0, 3], [0, 2.25, 6.75], [-0.5, -0.5, 0], [0, 0.5, 3])
    torch.testing.assert_close(adv, expected)
    # a row alone in its group is compared with the rest of the batch: (1.5 + 3) / 2
    adv, _ = ppo.group_advantages(rewards[:3], mask[:3], [0, 0, 1], gamma=0.5)
    torch.testing.assert_close(adv[2], torch.tensor([0, 4.5 - 2.25, 9 - 2.25]).double())
    with pytest.raises(ValueError, match="2 group ids for 3 rows"):
        ppo.group_advantages(rewards[:3], mask[:3], [0, 1], gamma=0.5)


def test_group_baselines_are_aligned_by_turn():
    # two-turn rows: reply (cols 0-1), feedback (col 2, not an action), second reply (3-4)
    mask = t([1, 1, 0, 1, 1], [1, 1, 0, 0, 0], [1, 1, 0, 1, 1])
    rewards = t([0, -1, 0, 0, 4], [0, 5, 0, 0, 0], [0, -1, 0, 0, -2])
    torch.testing.assert_close(ppo.turn_index(mask)[0], torch.tensor([0, 0, -1, 1, 1]))
    adv, ret = ppo.group_advantages(rewards, mask, [0, 0, 0], gamma=1.0)
    torch.testing.assert_close(ret, t([3, 3, 0, 4, 4], [5, 5, 0, 0, 0], [-3, -3, 0, -2, -2]))
    # turn 1: the others' episode returns, row 0: (5 - 3) / 2 = 1; row 1: 0; row 2: 4.
    # turn 2: only rows 0 and 2 reached it, each the other's baseline (from its turn start):
    # row 0: 4 - (-2) = 6; row 2: -2 - 4 = -6. The first turn's -1 does not leak into it.
    torch.testing.assert_close(adv, t([2, 2, 0, 6, 6], [5, 5, 0, 0, 0], [-7, -7, 0, -6, -6]))
    # no group mate reached turn 2: the batch's rows that did stand in; none at all: 0
    adv, _ = ppo.group_advantages(rewards, mask, [0, 1, 1], gamma=1.0)
    torch.testing.assert_close(adv, t([2, 2, 0, 6, 6], [8, 8, 0, 0, 0], [-8, -8, 0, -6, -6]))
    adv, _ = ppo.group_advantages(rewards[:2], mask[:2], [0, 0], gamma=1.0)
    torch.testing.assert_close(adv[0], t([3 - 5, 3 - 5, 0, 4, 4])[0])


def test_group_ids_keep_ungrouped_trajectories_apart():
    trajs = [_traj(), _traj(), _traj(), _traj()]
    trajs[0].stats["group"] = trajs[2].stats["group"] = "a"
    assert group_ids(trajs) == [0, 1, 0, 2]


def _traj(version=0, **kw):
    base = dict(
        token_ids=[5, 6, 7, 8, 9],
        logprobs=[0, -1.0, -2.0, 0, -0.5],
        action_mask=[0, 1, 1, 0, 1],
        rewards=[0, 0, 0.5, 1.0, 2.0],
        policy_version=version,
    )
    base.update(kw)
    return Trajectory(**base)


def test_collate_aligns_with_targets_and_moves_stray_rewards():
    batch = collate(
        [
            _traj(),
            _traj(
                token_ids=[1, 2, 3], logprobs=[0, -1, -1], action_mask=[0, 1, 1], rewards=[0, 0, 1]
            ),
        ],
        pad_id=0,
    )
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 9], [1, 2, 3, 0, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    # column j is target token j+1
    assert batch.action_mask.tolist() == [[1, 1, 0, 1], [1, 1, 0, 0]]
    # the 1.0 placed on the feedback token 8 moves to the previous action token 7
    assert batch.rewards.tolist() == [[0, 1.5, 0, 2.0], [0, 1, 0, 0]]
    assert batch.old_logprobs.tolist() == [[-1, -2, 0, -0.5], [-1, -1, 0, 0]]


def test_collate_rejects_bad_trajectories():
    with pytest.raises(ValueError, match="no action tokens"):
        collate([_traj(action_mask=[0] * 5)], 0)
    with pytest.raises(ValueError, match="token 0"):
        collate([_traj(action_mask=[1, 1, 1, 0, 1])], 0)


def test_staleness_filter_counts_dropped():
    trajs = [_traj(version=v) for v in (0, 1, 2, 3)]
    kept, dropped = split_stale(trajs, current_version=3, max_staleness=1)
    assert [k.policy_version for k in kept] == [2, 3]
    assert dropped == 2


def test_tokens_keep_their_versions_and_stale_turns_leave_the_loss():
    # turn 1 (tokens 1-2) sampled by version 1, turn 2 (token 4) by version 3
    late = _traj(versions=[1, 1, 1, 3, 3], version=1)
    old = _traj(version=0)
    kept, dropped = split_stale([late, old], current_version=3, max_staleness=1)
    assert kept == [late] and dropped == 1  # one fresh token is enough to keep an episode
    batch = collate(kept, pad_id=0)
    assert batch.versions.tolist() == [[1, 1, 3, 3]]
    assert batch.action_mask.tolist() == [[1, 1, 0, 1]]
    assert fresh_mask(batch, current_version=3, max_staleness=1).tolist() == [[0, 0, 0, 1]]
    assert fresh_mask(batch, current_version=3, max_staleness=2).tolist() == [[1, 1, 0, 1]]


def test_trajectory_versions_default_to_its_policy_version():
    assert _traj(version=4).versions == [4] * 5
    with pytest.raises(ValueError, match="versions=2"):
        _traj(versions=[0, 0])


def test_reward_trend_reads_through_noise():
    from actorlearner.pipeline.train_loop import reward_trend

    rising = reward_trend([-5.0, -2.0, -4.0, -1.0, -3.0, 0.0])
    assert rising["reward_slope"] == pytest.approx(5 / 7)  # Sxy 12.5 over Sxx 17.5
    assert (rising["reward_first_half"], rising["reward_last_half"]) == (-11 / 3, -4 / 3)
    assert reward_trend([1.0, 0.0])["reward_slope"] == pytest.approx(-1.0)
    assert reward_trend([3.0]) == {}


def test_probe_rewards_are_averaged_per_task():
    from actorlearner.pipeline.train_loop import task_rewards

    trajs = [_traj() for _ in range(3)]
    for t, (task, r) in zip(trajs, [("a", 1.0), ("a", 3.0), ("b", -1.0)], strict=True):
        t.task_id, t.rewards = task, [0.0] * (len(t.rewards) - 1) + [r]
    assert task_rewards(trajs) == {"a": 2.0, "b": -1.0}  # the mean over a task's episodes


@pytest.mark.parametrize("k", [1, 2, 4])
def test_async_batches_are_one_to_k_versions_stale(k):
    from actorlearner.pipeline.train_loop import push_due

    actor, made_by, stale = 0, [0], []
    for version in range(12):  # iteration: submit the next batch, train this one, maybe push
        made_by.append(actor)
        stale.append(version - made_by[version])
        if push_due("async", actor, version + 1, k):
            actor = version + 1
    assert stale[0] == 0 and set(stale[1:]) == set(range(1, k + 1))
    assert all(push_due("sync", v, v, k) for v in range(3))


def test_async_mode_needs_a_staleness_of_one_or_more():
    from actorlearner.pipeline.train_loop import check_staleness

    check_staleness("sync", 0)
    with pytest.raises(ValueError, match="max_staleness >= 1"):
        check_staleness("async", 0)
