from loupe_trainer.detect.samples import make_parts_dataset
make_parts_dataset('/tmp/h17s15/bench', 40, 100, 320, 0)
make_parts_dataset('/tmp/h17s15/dev', 4, 100, 320, 7)
make_parts_dataset('/tmp/h17s15/dev2', 4, 100, 320, 11)
