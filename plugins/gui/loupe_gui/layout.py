"""The workspace scaffold every workspace shares: a horizontal splitter with a left control column."""
from __future__ import annotations

from PyQt5 import QtCore, QtWidgets


def workspace_split(owner: QtWidgets.QWidget
                    ) -> tuple[QtWidgets.QSplitter, QtWidgets.QWidget, QtWidgets.QVBoxLayout]:
    """Fill ``owner`` with a splitter and add its left column: returns (splitter, column, column layout)."""
    outer = QtWidgets.QHBoxLayout(owner)
    outer.setContentsMargins(6, 6, 6, 6)
    split = QtWidgets.QSplitter(QtCore.Qt.Horizontal)
    split.setHandleWidth(5)
    outer.addWidget(split)
    left = QtWidgets.QWidget()
    ll = QtWidgets.QVBoxLayout(left)
    ll.setContentsMargins(0, 0, 4, 0)
    return split, left, ll
