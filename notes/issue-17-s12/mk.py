from loupe_trainer.detect.samples import make_parts_dataset
make_parts_dataset('/tmp/h17t/bench', 40, 100, 320, 0)
make_parts_dataset('/tmp/h17t/dev', 4, 100, 320, 7)
make_parts_dataset('/tmp/h17t/dev2', 4, 100, 320, 11)
