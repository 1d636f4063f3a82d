class TestGroup:
    def test_x(self):
        assert True
