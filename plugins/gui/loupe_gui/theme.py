"""A dark, neutral theme (Fusion + palette + a small style sheet) and the verdict colours."""
from __future__ import annotations

from PyQt5 import QtGui, QtWidgets

from host import VERDICT_COLOURS

BG = "#1e2126"          # window
PANEL = "#252930"       # panels, lists
BASE = "#181b20"        # editors, image background
BORDER = "#363b45"
TEXT = "#d7dae0"
MUTED = "#8b93a1"
ACCENT = "#3d8bfd"

#: verdict / overlay status colours (Shape.status and ToolResult.verdict)
STATUS = dict(VERDICT_COLOURS)  # one set of verdict colours: the host's, as every report and chart uses


def status_color(status: str) -> QtGui.QColor:
    return QtGui.QColor(STATUS.get(status, STATUS["info"]))


STYLE = f"""
QWidget {{ font-size: 10pt; }}
QMainWindow, QDialog {{ background: {BG}; }}
QGroupBox {{ border: 1px solid {BORDER}; border-radius: 4px; margin-top: 14px; padding: 6px 6px 6px 6px;
             background: {PANEL}; }}
QGroupBox::title {{ subcontrol-origin: margin; subcontrol-position: top left; left: 8px; padding: 0 4px;
                    color: {MUTED}; font-weight: bold; text-transform: uppercase; }}
QListWidget, QTableWidget, QTreeWidget, QPlainTextEdit, QTextEdit {{ background: {BASE}; border: 1px solid {BORDER};
             border-radius: 3px; }}
QHeaderView::section {{ background: {PANEL}; color: {MUTED}; border: none; border-right: 1px solid {BORDER};
                        border-bottom: 1px solid {BORDER}; padding: 3px 6px; }}
QTableWidget {{ gridline-color: {BORDER}; }}
QPushButton {{ background: #2f343d; border: 1px solid {BORDER}; border-radius: 3px; padding: 5px 12px; }}
QPushButton:hover {{ background: #3a404b; }}
QPushButton:pressed, QPushButton:checked {{ background: #26406a; border-color: {ACCENT}; }}
QPushButton:disabled {{ color: #5c6370; background: #272a30; }}
QPushButton#primary {{ background: {ACCENT}; color: white; border-color: {ACCENT}; font-weight: bold; }}
QPushButton#primary:hover {{ background: #5a9dfd; }}
QPushButton#primary:disabled {{ background: #2c3e5c; color: #8192ad; }}
QPushButton#danger {{ background: #5a2a2a; border-color: #8a3a3a; }}
QToolBar {{ background: {PANEL}; border: none; border-bottom: 1px solid {BORDER}; spacing: 4px; padding: 3px; }}
QToolButton {{ padding: 4px 8px; border-radius: 3px; }}
QToolButton:hover {{ background: #3a404b; }}
QToolButton:checked {{ background: #26406a; }}
QLineEdit, QSpinBox, QDoubleSpinBox, QComboBox {{ background: {BASE}; border: 1px solid {BORDER}; border-radius: 3px;
                                                 padding: 3px 5px; min-height: 18px; }}
QLineEdit:focus, QSpinBox:focus, QDoubleSpinBox:focus, QComboBox:focus {{ border-color: {ACCENT}; }}
QLineEdit[invalid="true"], QSpinBox[invalid="true"], QDoubleSpinBox[invalid="true"], QComboBox[invalid="true"]
    {{ border-color: {STATUS['fail']}; }}
QProgressBar {{ background: {BASE}; border: 1px solid {BORDER}; border-radius: 3px; text-align: center; height: 16px; }}
QProgressBar::chunk {{ background: {ACCENT}; border-radius: 2px; }}
QSplitter::handle {{ background: {BG}; }}
QScrollArea {{ border: none; background: transparent; }}
QTabWidget::pane {{ border: 1px solid {BORDER}; border-radius: 3px; background: {PANEL}; top: -1px; }}
QTabBar::tab {{ background: {BG}; color: {MUTED}; padding: 5px 14px; border: 1px solid {BORDER};
                border-bottom: none; border-top-left-radius: 3px; border-top-right-radius: 3px; margin-right: 2px; }}
QTabBar::tab:selected {{ background: {PANEL}; color: {TEXT}; }}
QListWidget#nav {{ background: #16191d; border: none; border-right: 1px solid {BORDER}; font-size: 11pt;
                   padding-top: 8px; }}
QListWidget#nav::item {{ padding: 12px 10px; color: {MUTED}; border-left: 3px solid transparent; }}
QListWidget#nav::item:selected {{ background: {PANEL}; color: {TEXT}; border-left: 3px solid {ACCENT}; }}
QLabel#muted {{ color: {MUTED}; }}
QLabel#error {{ color: {STATUS['fail']}; font-size: 9pt; }}
QLabel#heading {{ font-size: 12pt; font-weight: bold; }}
QStatusBar {{ background: #16191d; color: {MUTED}; border-top: 1px solid {BORDER}; }}
"""


def apply(app: QtWidgets.QApplication) -> None:
    """Dark Fusion palette plus the style sheet."""
    app.setStyle("Fusion")
    pal = QtGui.QPalette()
    c = QtGui.QColor
    pal.setColor(QtGui.QPalette.Window, c(BG))
    pal.setColor(QtGui.QPalette.WindowText, c(TEXT))
    pal.setColor(QtGui.QPalette.Base, c(BASE))
    pal.setColor(QtGui.QPalette.AlternateBase, c(PANEL))
    pal.setColor(QtGui.QPalette.ToolTipBase, c(PANEL))
    pal.setColor(QtGui.QPalette.ToolTipText, c(TEXT))
    pal.setColor(QtGui.QPalette.Text, c(TEXT))
    pal.setColor(QtGui.QPalette.Button, c("#2f343d"))
    pal.setColor(QtGui.QPalette.ButtonText, c(TEXT))
    pal.setColor(QtGui.QPalette.BrightText, c("#ffffff"))
    pal.setColor(QtGui.QPalette.Highlight, c("#2d5ea8"))
    pal.setColor(QtGui.QPalette.HighlightedText, c("#ffffff"))
    pal.setColor(QtGui.QPalette.Link, c(ACCENT))
    pal.setColor(QtGui.QPalette.PlaceholderText, c(MUTED))
    for role in (QtGui.QPalette.Text, QtGui.QPalette.ButtonText, QtGui.QPalette.WindowText):
        pal.setColor(QtGui.QPalette.Disabled, role, c("#5c6370"))
    app.setPalette(pal)
    app.setStyleSheet(STYLE)


def repolish(w: QtWidgets.QWidget) -> None:
    """Re-apply the style sheet after a dynamic property changed."""
    w.style().unpolish(w)
    w.style().polish(w)
