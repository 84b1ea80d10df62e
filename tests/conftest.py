"""Every test directory: widgets are drawn offscreen (no display needed), also when one directory runs alone
(the detection and segmentation tests open the desktop app's workspaces)."""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
