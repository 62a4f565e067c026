"""Early-exit decoding: static and dynamic exits, generation and multiple-choice scoring."""
