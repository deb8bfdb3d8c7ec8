"""Scripted experts: controllers that act from the observation alone, so that they can both record
demonstrations and label the states a cloned policy visits (DAgger). One per supported environment."""
from __future__ import annotations

import math

import numpy as np


class CartPoleExpert:
    """CartPole-v1 by a linear-quadratic regulator (LQR). gymnasium's cart-pole equations, linearised about
    the upright pole, give x' = A x + B f for the state x = (cart position, cart velocity, pole angle, pole
    angular velocity) and the force f; the continuous Riccati equation with Q = diag(1, 1, 10, 1), R = 1
    gives the gains K of f = -K x. The environment only pushes left or right with a fixed force, so the
    expert pushes the way f points: action 1 (right) when -K x > 0, else 0. It balances every episode to
    the 500-step limit."""

    GRAVITY, CART_MASS, POLE_MASS, HALF_LENGTH = 9.8, 1.0, 0.1, 0.5  # as gymnasium's CartPoleEnv

    def __init__(self):
        from scipy.linalg import solve_continuous_are

        total = self.CART_MASS + self.POLE_MASS
        lever = self.HALF_LENGTH * (4.0 / 3.0 - self.POLE_MASS / total)
        a = np.array([[0, 1, 0, 0], [0, 0, -self.POLE_MASS * self.HALF_LENGTH * self.GRAVITY / (lever * total), 0],
                      [0, 0, 0, 1], [0, 0, self.GRAVITY / lever, 0]], dtype=np.float64)
        b = np.array([[0], [1 / total + self.POLE_MASS * self.HALF_LENGTH / (total * total * lever)], [0],
                      [-1 / (total * lever)]], dtype=np.float64)
        q, r = np.diag([1.0, 1.0, 10.0, 1.0]), np.array([[1.0]])
        riccati = solve_continuous_are(a, b, q, r)
        self.gains = (np.linalg.inv(r) @ b.T @ riccati).ravel()  # (4,) about (-1, -2.3, -32.2, -8.2)

    def act(self, observation: np.ndarray) -> int:
        return int(-self.gains @ np.asarray(observation, dtype=np.float64) > 0)


class ReacherExpert:
    """Reacher-v5 (a two-joint arm in the plane) by inverse kinematics plus PD control on the joint angles.
    From the observation it reads the joint angles (atan2 of their sines and cosines), their velocities and
    the target's position; inverse kinematics of the two links (0.1 and 0.11 long) gives the two joint
    angle pairs that put the fingertip on the target (elbow one way or the other), and it takes the pair
    nearer the arm's present angles. Each joint's torque is then kp * (angle error) - kd * (angular
    velocity), clipped to [-1, 1]. Small gains (kp 0.3, kd 0.05) matter: the reward charges the squared
    torque every step, and the joints' gear of 200 turns small torques into fast motion."""

    LINKS = (0.1, 0.11)
    KP, KD = 0.3, 0.05

    def act(self, observation: np.ndarray) -> np.ndarray:
        observation = np.asarray(observation, dtype=np.float64)
        angles = np.arctan2(observation[2:4], observation[0:2])  # (2,)
        velocities, target = observation[6:8], observation[4:6]
        first, second = self.LINKS
        cosine = (target @ target - first ** 2 - second ** 2) / (2 * first * second)
        elbow = math.acos(min(1.0, max(-1.0, cosine)))
        best = None
        for bend in (elbow, -elbow):
            shoulder = math.atan2(target[1], target[0]) - math.atan2(second * math.sin(bend),
                                                                     first + second * math.cos(bend))
            # the shoulder turns freely (any multiple of 2 pi is the same place); the elbow is limited to +-3
            error = np.array([_wrapped(shoulder - angles[0]), bend - angles[1]])
            if best is None or np.abs(error).sum() < np.abs(best).sum():
                best = error
        return np.clip(self.KP * best - self.KD * velocities, -1.0, 1.0)


def _wrapped(angle: float) -> float:
    """An angle difference in [-pi, pi)."""
    return (angle + math.pi) % (2 * math.pi) - math.pi
