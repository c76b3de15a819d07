"""The SRE load benchmark behind ``janus bench run`` (needs the ``bench`` extra): scenarios
(:mod:`.scenario`), the run's processes (:mod:`.agents`), the run (:mod:`.run`), the live
view (:mod:`.progress`) and the report (:mod:`.report`)."""
