"""Metrics: detection (AUROC, AP, AUPRO, F1-max) and generation quality (LPIPS, IC-LPIPS, KID, FID, IS)."""
