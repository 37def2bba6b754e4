"""The suite's platform apps. Each capability is a package: a pure `core`, a thin `app` adapter.

`APPS` maps the short names the command-line client accepts to the module a manager loads.
(Kept import-free: naming an app must not load the controller platform.)
"""

APPS = {
    "learning": "ryu_apps.learning.app",
    "roles": "ryu_apps.roles.app",
    "erc": "ryu_apps.erc.app",
    "lime": "lime_shim.app",
    "vnm": "ryu_apps.vnm.app",
    "pathflip": "ryu_apps.pathflip.app",
    "simple_switch_13": "ryu_apps.hosted.simple_switch_13",
}
