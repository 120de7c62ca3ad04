"""Footage stage: decode (video.py), detect + landmarks (detect.py), the EMOCA crop (crop.py) and face tracks
(track.py).

Submodules are imported on use (``from backend.footage.video import open_footage``) so that importing the
package stays cheap and numpy-only.
"""
