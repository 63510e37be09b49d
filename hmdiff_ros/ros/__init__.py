"""The ROS 2 layer: the rclpy node (``node``) and rosbag2 processing without ROS (``bag``),
sharing one boundary: camera messages in and images out (``bridge``), a frame's output
messages (``convert``), body frames and TF (``frames``); and the node's parameters
(``params``), frame health (``health``) and newest-frame worker (``worker``); the node under a
camera-rate stream (``load``, ``hmdiff bench-node``) and under camera faults (``soak``, with its
``faults`` and ``soak_report``; ``hmdiff bench-node --faults``). Only ``node``, ``load``,
``soak`` and ``faults`` import rclpy."""


def node_main(args=None) -> None:
    """Entry point of ``hmdiff_node``: a clear message where ROS 2 is not sourced."""
    import signal

    # Ctrl-C is a request to stop, never an exception: a KeyboardInterrupt raised inside the
    # import of a C++ extension (torch, MediaPipe, rclpy; some load while the node configures)
    # leaves the process half-made or kills it. Once rclpy.init has run, rclpy's handler sits in
    # front of this one and shuts the context down, which ends a transition or spinning; before
    # that, the flag is checked (main's ``stop_requested``)
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    try:
        from hmdiff_ros.ros.node import main
    except ImportError as exc:
        raise SystemExit(
            f"hmdiff_node needs ROS 2 (rclpy) and the built hmdiff_msgs package: {exc}. "
            'Source your ROS 2 setup and the workspace (see README, "With a camera in ROS 2").'
        ) from None
    if stop:
        raise SystemExit(0)  # a requested stop
    main(args, stop_requested=lambda: bool(stop))
