"""Behaviour cloning in simulation: Gymnasium environments with scripted experts (environments.py,
experts.py), demonstrations recorded from them (demonstrations.py), a trained model run as a policy and
compared with the expert, the do-nothing action and random actions (policy.py, rollout.py), DAgger
(dagger.py) and the `lamina rollout` command (command.py). gymnasium and mujoco are imported only when
an environment is made: pip install 'lamina[simulation]'."""
