from hypervisor.process import main

raise SystemExit(main())
