"""Metrics: detection (AUROC, AP, AUPRO, F1-max) and generation quality (LPIPS, IC-LPIPS, KID, FID, IS)."""
from anobench.metrics.lpips import LPIPSModel, lpips_distance, lpips_features, pairwise_distances  # noqa: E402,F401
from anobench.metrics.generation import (  # noqa: E402,F401
    IC_LPIPS_VARIANTS,
    ICLPIPSConfig,
    fid,
    ic_lpips,
    inception_score,
    kid,
    mask_consistency,
)
from anobench.metrics.detection import DETECTION_METRICS, aupro, detection_metrics, ranking_metrics  # noqa: F401
