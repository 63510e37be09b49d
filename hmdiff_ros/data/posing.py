"""Fast batched posing of shape-bank bodies: forward kinematics + linear blend skinning.

Reproduces Anny's own forward (``local-ref`` pose parameterisation, LBS) in plain torch on
the shape bank, for the vertex subset the bank holds, so that data generation needs
neither Anny nor warp. Notation follows ``anny.utils.kinematics.forward_kinematic``; for a
bone c with parent p:

- ``P_c = [R_c | h_c]``: rest pose; ``U_c``: reference orientation;
- ``q_c - q_p = A_p (h_c - h_p)`` with ``A_p = U_p R_p^T`` (``A_0 = I``): reference head offsets;
- ``D_c``: the pose rotation in world-aligned axes; ``M_c = D_c U_c``;
- posed pose ``W_c = W_p K_c`` with ``K_c = [U_p^T M_c | U_p^T (q_c - q_p)]``, ``W_0 = [U_0^T D_0 U_0 | 0]``;
- skinning transform ``T_c = W_c P_c^-1``; vertex ``v' = sum_k w_k T_{b_k} v``.

Poses are given as in :class:`~hmdiff_ros.body.anny_body.AnnyBody`: axis-angle ``(B, 103, 3)``
in canonical axes (y up, facing +z); output vertices are in the canonical frame.
"""

from __future__ import annotations

from typing import List, Tuple

import torch

from hmdiff_ros.body.anny_body import ANNY_TO_CANONICAL
from hmdiff_ros.body.base import axis_angle_to_matrix
from hmdiff_ros.data.shapes import ShapeBank


def _levels(parents: List[int]) -> List[torch.Tensor]:
    """Bones grouped by depth (root excluded), so one level is posed in one batched product."""
    depth = [0] * len(parents)
    for b in range(1, len(parents)):
        depth[b] = depth[parents[b]] + 1
    return [torch.tensor([b for b in range(1, len(parents)) if depth[b] == d]) for d in range(1, max(depth) + 1)]


class FastPoser(torch.nn.Module):
    """Poses the bank's vertex subset for given shape indices and poses."""

    def __init__(self, bank: ShapeBank, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.num_coarse = bank.num_coarse
        parents = [int(p) for p in bank.parents]
        self.parents = torch.tensor([0] + parents[1:])
        self.levels = _levels(parents)
        rot = torch.as_tensor(bank.bone_rot, dtype=torch.float64)  # (S, 104, 3, 3) R_c
        head = torch.as_tensor(bank.bone_head, dtype=torch.float64)  # (S, 104, 3) h_c
        ref = torch.as_tensor(bank.reference, dtype=torch.float64)  # (104, 3, 3) U_c
        # q_c - q_p = A_p (h_c - h_p), A_p = U_p R_p^T, A_0 = I; kept as U_p^T (q_c - q_p).
        a = ref[None] @ rot.transpose(-1, -2)  # (S, 104, 3, 3)
        a[:, 0] = torch.eye(3, dtype=torch.float64)
        offsets = (a[:, self.parents] @ (head - head[:, self.parents])[..., None])[..., 0]  # (S, 104, 3)
        k_trans = (ref[self.parents].transpose(-1, -2)[None] @ offsets[..., None])[..., 0]
        c = torch.as_tensor(ANNY_TO_CANONICAL, dtype=torch.float64)
        self.register_buffer("to_canonical", c.to(dtype))
        self.register_buffer("ref", ref.to(dtype))
        self.register_buffer("ref_parent_t", ref[self.parents].transpose(-1, -2).to(dtype))  # U_p^T
        self.register_buffer("k_trans", k_trans.to(dtype))  # (S, 104, 3)
        self.register_buffer("rest_rot_t", rot.transpose(-1, -2).to(dtype))  # R_c^T
        self.register_buffer("rest_head", head.to(dtype))
        # Rest vertices in Anny's frame (the bank stores them canonical).
        self.register_buffer("rest_vertices", torch.as_tensor(bank.rest_vertices, dtype=dtype) @ c.to(dtype))
        dense = torch.zeros(len(bank.skin_index), len(parents), dtype=torch.float64)  # (N, 104) LBS weights
        dense.scatter_add_(1, torch.as_tensor(bank.skin_index), torch.as_tensor(bank.skin_weight, dtype=torch.float64))
        self.register_buffer("skin_dense", dense.to(dtype))
        self.register_buffer("joint_regressor", torch.as_tensor(bank.joint_regressor, dtype=dtype))

    @property
    def bank_size(self) -> int:
        return int(self.k_trans.shape[0])

    def bone_transforms(self, shape_ids: torch.Tensor, pose: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Skinning transforms ``T_c`` as rotations ``(B, 104, 3, 3)`` and translations ``(B, 104, 3)``."""
        batch = pose.shape[0]
        c = self.to_canonical
        d = c.T @ axis_angle_to_matrix(pose.to(c.dtype)) @ c  # (B, 103, 3, 3) in Anny's axes
        k_rot = self.ref_parent_t[1:] @ d @ self.ref[1:]  # (B, 103, 3, 3) U_p^T D_c U_c
        k_trans = self.k_trans[shape_ids]  # (B, 104, 3)
        w_rot = torch.empty(batch, len(self.parents), 3, 3, dtype=c.dtype, device=c.device)
        w_trans = torch.empty(batch, len(self.parents), 3, dtype=c.dtype, device=c.device)
        w_rot[:, 0] = torch.eye(3, dtype=c.dtype, device=c.device)  # root: identity delta
        w_trans[:, 0] = 0.0
        for level in self.levels:
            p = self.parents[level]
            w_rot[:, level] = w_rot[:, p] @ k_rot[:, level - 1]
            w_trans[:, level] = (w_rot[:, p] @ k_trans[:, level, :, None])[..., 0] + w_trans[:, p]
        t_rot = w_rot @ self.rest_rot_t[shape_ids]  # (B, 104, 3, 3) W_c R_c^T
        t_trans = w_trans - (t_rot @ self.rest_head[shape_ids][..., None])[..., 0]
        return t_rot, t_trans

    def forward(
        self, shape_ids: torch.Tensor, pose: torch.Tensor, count: int | None = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Posed vertices ``(B, N, 3)`` (the first ``count`` of the bank's subset, all by
        default; ``num_coarse`` gives the coarse mesh) and our joints ``(B, 25, 3)``, canonical
        frame, before global rotation and translation."""
        t_rot, t_trans = self.bone_transforms(shape_ids, pose)
        rest = self.rest_vertices[shape_ids]  # (B, N, 3)
        # LBS: blend the (B, 104, 12) bone transforms with the (N, 104) weights, then apply.
        transforms = torch.cat([t_rot.flatten(2), t_trans], dim=2)  # (B, 104, 12)
        blend = (self.skin_dense @ transforms).unflatten(2, (4, 3))  # (B, N, 4, 3): 3 rows + translation
        verts = (blend[:, :, :3] * rest[:, :, None, :]).sum(-1) + blend[:, :, 3]  # (B, N, 3) Anny frame
        verts = verts @ self.to_canonical.T
        joints = torch.einsum("jn,bnd->bjd", self.joint_regressor, verts)
        n = verts.shape[1] if count is None else count
        return verts[:, :n], joints
