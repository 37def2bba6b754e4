"""Ryu's own installed `ryu.app.simple_switch_13`, loadable as `simple_switch_13`.

Under `[sdnmig] events = lime` its handlers take their events from the LIME shim (see
`ryu_apps.hosted`); under `events = platform` it is the installed app as it is. Its code is not
here: this module only names it.
"""
from ryu_apps.hosted import host

SimpleSwitch13 = host("simple_switch_13", __name__)
