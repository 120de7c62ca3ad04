"""Footage stage: decode (video.py), detect + landmarks (detect.py), the EMOCA crop (crop.py), face tracks
(track.py), temporal smoothing and gap filling (smooth.py), and synthetic test clips (synthetic.py).

Submodules are imported on use (``from backend.footage.video import open_footage``) so that importing the
package stays cheap and numpy-only.
"""
