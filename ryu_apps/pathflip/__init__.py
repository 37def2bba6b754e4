"""The VNM paper's control application (issue 5): the path between two hosts flips between an
upper and a lower path every period; `core` decides, `app` is the platform adapter."""
